"""Hydra's record of a run, in its output directory's .hydra/: the config, Hydra's config and the overrides,
which `--experimental-rerun` and the sweep summary read.

Hydra saves it before the run starts, over the record of the run that a refused one finds there (after
which that run could not be rerun either). conf/config.yaml turns that off (`hydra.output_subdir: null`),
and main.py saves it here once `run()` has accepted the run.
"""

from pathlib import Path

import yaml
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from src.errors import UserError

__all__ = ["check_rerun_directory", "save_run_record"]

RECORD = ".hydra"  # where Hydra keeps it, and where `--experimental-rerun` looks


def save_run_record(cfg: DictConfig, output_dir: Path) -> None:
    """Save what Hydra would have saved: the task's config, Hydra's config and the command-line overrides."""
    record = output_dir / RECORD
    record.mkdir(exist_ok=True)
    hydra_config = HydraConfig.get()
    OmegaConf.save(cfg, record / "config.yaml")
    OmegaConf.save(OmegaConf.create({"hydra": hydra_config}), record / "hydra.yaml")
    OmegaConf.save(hydra_config.overrides.task, record / "overrides.yaml")


def check_rerun_directory(arguments: list[str]) -> None:
    """Refuse `--experimental-rerun DIR` where DIR holds no record of a run that Hydra can read (it would end
    in a traceback)."""
    for index, argument in enumerate(arguments):
        name, equals, value = argument.partition("=")
        if name == "--experimental-rerun" and {"--multirun", "-m"} & set(arguments):
            raise UserError("--experimental-rerun reruns one run: leave out --multirun.")
        if name == "--experimental-rerun":
            directory = Path(value if equals else next(iter(arguments[index + 1 :]), ""))
            problem = _record_problem(directory / RECORD)
            if problem is not None:
                raise UserError(
                    f"--experimental-rerun {directory}: that is not the output directory of a run ({problem}); "
                    "give one such as outputs/DATE/TIME, or multirun/DATE/TIME/0 for a job."
                )


def _record_problem(record: Path) -> str | None:
    """What keeps Hydra from reading the record of a run, if anything."""
    for name in ("hydra.yaml", "overrides.yaml"):
        if not (record / name).is_file():
            return f"it has no {RECORD}/{name}"
    try:
        OmegaConf.load(record / "hydra.yaml").hydra.overrides.hydra  # noqa: B018 (read to check)
        OmegaConf.load(record / "overrides.yaml")
    except (OSError, OmegaConfBaseException, AttributeError, yaml.YAMLError) as error:
        return str(error).strip().splitlines()[0]
    return None
