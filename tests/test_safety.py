"""Safe config and safe outputs: code named by a config is imported only from trusted modules, a W&B API
key is never logged, and an output directory or data folder that cannot be used is one clear line."""

import sys
from pathlib import Path

import pytest
from torch import nn

from src import optimisation
from src.optimisation import OptimisationCfg
from tests.helpers import TINY, RunMain

# Hydra calls this callback before it creates the output directory. `++` adds it, or overrides it
# once conf/config.yaml registers it.
CHECK_OUTPUT_DIR = "++hydra.callbacks.output_dir_check={_target_: src.sweeps.callbacks.OutputDirCheck}"
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


@pytest.mark.parametrize(
    "args",
    [("opt.optimizer_cls=untrusted.Adam",), ("opt.optimizer_cls=untrusted.Adam", "+opt.allowed_modules=[untrusted]")],
    ids=["named", "with-a-list-in-the-config"],
)
def test_an_optimiser_from_an_untrusted_module_is_refused_before_it_is_imported(
    run_main: RunMain, tmp_path: Path, untrusted: dict[str, str], args: tuple[str, ...]
) -> None:
    result = run_main(*args, env=untrusted)
    assert result.returncode == 1
    # The list of trusted modules is in the code, where a config cannot add to it.
    assert result.stderr.startswith("Error: ")
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "imported").exists()


def test_a_module_added_to_the_trusted_ones_may_provide_the_optimiser(
    tmp_path: Path, untrusted: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "path", [untrusted["PYTHONPATH"], *sys.path])
    monkeypatch.chdir(tmp_path)
    # As a user who trusts the module edits the list in src/optimisation.py.
    monkeypatch.setattr(optimisation, "TRUSTED_OPTIMIZER_MODULES", ("torch.optim", "untrusted"))
    optimizer = OptimisationCfg(optimizer_cls="untrusted.Adam").build(nn.Linear(2, 1).parameters())
    assert type(optimizer).__module__ == "untrusted"
    assert (tmp_path / "imported").exists()


@pytest.mark.parametrize(
    "args",
    [
        ("wandb.name=${oc.env:WANDB_API_KEY}",),
        (f"+wandb.api_key={SECRET}",),
        (f"+wandb.API_KEY={SECRET}",),
        (f"+opt.optimizer_kwargs={{token: {SECRET}}}",),
        ("--multirun", "seed=1,2", f"+wandb.Api_Key={SECRET}"),
        ("--multirun", f"+wandb.password=a,{SECRET}"),
        ("--multirun", f"wandb.tags=[a],[{SECRET}]"),
    ],
    ids=["interpolated", "added", "in-capitals", "anywhere", "in-a-multirun", "swept", "swept-value"],
)
def test_a_config_that_holds_a_credential_is_refused_before_anything_is_written(
    run_main: RunMain, tmp_path: Path, args: tuple[str, ...]
) -> None:
    result = run_main(
        *args,
        "wandb.mode=offline",
        "wandb.dir=wb",
        "hydra.run.dir=out",
        "hydra.sweep.dir=sweep",
        env={"WANDB_API_KEY": SECRET},
    )
    assert result.returncode == 1
    assert result.stderr.startswith("Error: the config")
    assert len(result.stderr.strip().splitlines()) == 1
    assert SECRET not in result.stdout + result.stderr
    # Nothing written: no W&B run, no record of the run or the sweep (.hydra/, multirun.yaml, summary.csv).
    assert not (tmp_path / "wb").exists()
    assert not (tmp_path / "sweep").exists()
    # (Hydra opens the log file of a run before the run starts: empty.)
    assert {path.read_bytes() for path in tmp_path.rglob("*") if path.is_file()} <= {b""}


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


@pytest.mark.slow
def test_a_data_root_that_is_a_file_is_one_clear_line(run_main: RunMain, tmp_path: Path) -> None:
    (tmp_path / "a_file").touch()
    result = run_main("dm.root=a_file", "dm.digits=MNIST", *TINY)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "Error: dm.digits=MNIST, but there are no MNIST files in a_file/MNIST/raw and the download failed: "
        f"[Errno 20] Not a directory: '{tmp_path}/a_file/MNIST'. Put the four MNIST files there, or set dm.root to "
        "where they are."
    ]
