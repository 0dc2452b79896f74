"""Safe config and safe outputs: code named by a config is imported only from trusted modules, a W&B API
key is never logged, and an output directory or data folder that cannot be used is one clear line."""

import sys
from pathlib import Path

import pytest
from torch import nn

from src.optimisation import OptimisationCfg
from tests.conftest import RunMain

# Hydra calls this callback before it creates the output directory. `++` adds it, or overrides it
# once conf/config.yaml registers it.
CHECK_OUTPUT_DIR = "++hydra.callbacks.output_dir_check={_target_: src.callbacks.OutputDirCheck}"
TINY = ("model.hidden_dim=16", "opt.epochs=1")
SECRET = "0123456789abcdef0123456789abcdef01234567"  # looks like an API key, and is nowhere else
# A module whose import has a side effect, as untrusted code would.
UNTRUSTED_MODULE = """
from pathlib import Path

import torch

Path("imported").touch()


class Adam(torch.optim.Adam):
    pass
"""


@pytest.fixture
def untrusted(tmp_path: Path) -> dict[str, str]:
    """The environment that puts the module `untrusted` on the path."""
    (tmp_path / "modules").mkdir()
    (tmp_path / "modules" / "untrusted.py").write_text(UNTRUSTED_MODULE)
    return {"PYTHONPATH": str(tmp_path / "modules")}


def test_an_optimiser_from_outside_the_allowed_modules_is_refused_before_it_is_imported(
    run_main: RunMain, tmp_path: Path, untrusted: dict[str, str]
) -> None:
    result = run_main("opt.optimizer_cls=untrusted.Adam", env=untrusted)
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "Error: opt.optimizer_cls=untrusted.Adam is not an optimiser of opt.allowed_modules=['torch.optim']; "
        "add its module to that list if you trust its code."
    )
    assert not (tmp_path / "imported").exists()


def test_an_allowed_module_may_provide_the_optimiser(
    tmp_path: Path, untrusted: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "path", [untrusted["PYTHONPATH"], *sys.path])
    monkeypatch.chdir(tmp_path)
    opt = OptimisationCfg(optimizer_cls="untrusted.Adam", allowed_modules=["torch.optim", "untrusted"])
    optimizer = opt.build(nn.Linear(2, 1).parameters())
    assert type(optimizer).__module__ == "untrusted"
    assert (tmp_path / "imported").exists()


@pytest.mark.parametrize(
    "override",
    ["wandb.name=${oc.env:WANDB_API_KEY}", f"+wandb.api_key={SECRET}", f"+opt.optimizer_kwargs={{token: {SECRET}}}"],
    ids=["interpolated", "added", "anywhere"],
)
def test_a_config_that_holds_the_wandb_api_key_is_refused_without_showing_it(
    run_main: RunMain, tmp_path: Path, override: str
) -> None:
    result = run_main(
        override, "wandb.mode=offline", "wandb.dir=wb", "hydra.run.dir=out", env={"WANDB_API_KEY": SECRET}
    )
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "Error: the config holds a W&B API key, which would be logged with it: remove it; W&B reads the key from the "
        "environment variable WANDB_API_KEY or from ~/.netrc (`wandb login`)."
    )
    assert not (tmp_path / "wb").exists()  # W&B never started


@pytest.mark.slow
def test_the_wandb_api_key_is_in_no_output_of_a_run(run_main: RunMain, tmp_path: Path) -> None:
    result = run_main(*TINY, "wandb.mode=offline", "wandb.dir=wb", "hydra.run.dir=out", env={"WANDB_API_KEY": SECRET})
    assert result.returncode == 0, result.stderr
    written = [path for path in tmp_path.rglob("*") if path.is_file()]
    assert any(path.suffix == ".wandb" for path in written)
    assert (tmp_path / "out" / "metrics.json") in written
    for path in written:
        assert SECRET.encode() not in path.read_bytes(), path
    assert SECRET not in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("hydra.run.dir=/proc/out",), "Error: cannot write to the output directory /proc/out ([Errno 2] No such file"),
        (("hydra.run.dir=a_file",), "Error: cannot write to the output directory a_file ([Errno 17] File exists"),
        (
            ("--multirun", "seed=1,2", "hydra.sweep.dir=a_file/sweep"),
            "Error: cannot write to the output directory a_file/sweep ([Errno 20] Not a directory",
        ),
    ],
    ids=["missing", "a-file", "sweep-in-a-file"],
)
def test_an_unwritable_output_directory_is_one_clear_line(
    run_main: RunMain, tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    (tmp_path / "a_file").touch()
    result = run_main(CHECK_OUTPUT_DIR, *args)
    assert result.returncode == 1
    assert result.stderr.strip().startswith(message)
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stdout + result.stderr


def test_a_data_root_that_is_a_file_is_one_clear_line(run_main: RunMain, tmp_path: Path) -> None:
    (tmp_path / "a_file").touch()
    result = run_main("dm.root=a_file", "dm.digits=MNIST", *TINY)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "Error: dm.digits=MNIST, but there is no MNIST files in a_file/MNIST/raw and the download failed: "
        "[Errno 20] Not a directory: 'a_file/MNIST'. Put the four MNIST files there, or set dm.root to where they are."
    ]
