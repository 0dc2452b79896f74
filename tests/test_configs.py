"""Every config group option and experiment composes, and instantiates to its dataclasses."""

from collections.abc import Iterator
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from src.config import Config

CONF = Path(__file__).resolve().parents[1] / "conf"
# The groups a YAML file can belong to, and how an override selects one of their options.
SELECTORS = {
    "dm": "dm={}",
    "model": "model={}",
    "experiment": "+experiment={}",  # not in the defaults list: `+` adds it
    "hydra/launcher": "hydra/launcher={}",
    "hydra/sweeper": "hydra/sweeper={}",
}


def override_for(yaml_file: Path) -> str:
    """The override that selects this file, e.g. conf/experiment/cmnist/cnn.yaml -> +experiment=cmnist/cnn."""
    option = yaml_file.relative_to(CONF).with_suffix("").as_posix()
    for group, selector in SELECTORS.items():
        if option.startswith(f"{group}/"):
            return selector.format(option.removeprefix(f"{group}/"))
    raise AssertionError(f"{yaml_file} is in no known config group: add its group to SELECTORS")


def all_overrides() -> Iterator[str]:
    yield from (override_for(path) for path in sorted(CONF.rglob("*.yaml")) if path != CONF / "config.yaml")
    # tests/conftest.py filled the ConfigStore, as main.py does.
    for group in ("dm", "model"):  # the options that come from the ConfigStore, not from YAML
        yield from (f"{group}={name.removesuffix('.yaml')}" for name in ConfigStore.instance().list(group))


@pytest.mark.parametrize("override", sorted(set(all_overrides())))
def test_option_composes_and_instantiates(override: str) -> None:
    with initialize_config_dir(config_dir=str(CONF)):
        cfg = compose(config_name="config", overrides=[override], return_hydra_config=True)
        choice, _, option = override.lstrip("+").partition("=")
        if choice.startswith("hydra/"):
            assert cfg.hydra.runtime.choices[choice] == option
        cfg = compose(config_name="config", overrides=[] if choice.startswith("hydra/") else [override])
    assert isinstance(OmegaConf.to_object(cfg), Config)


def test_yaml_options_inherit_as_the_readme_says() -> None:
    with initialize_config_dir(config_dir=str(CONF)):
        small = compose(config_name="config", overrides=["dm=celeba_male_smiling_small"])
        good_run = compose(config_name="config", overrides=["+experiment=good_run"])
        single = compose(config_name="config", overrides=["model=single_linear_layer"])
    assert (small.dm.superclass.name, small.dm.subclass.name, small.dm.default_res) == ("SMILING", "MALE", 32)
    assert (good_run.seed, good_run.dm.default_res, good_run.opt.lr) == (1, 32, 0.001)
    assert (good_run.model.kernel_size, good_run.model.activation.name) == (5, "SELU")  # a cnn
    assert single.model.num_hidden == 0
