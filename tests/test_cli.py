"""The command line's fast paths, and errors that need a machine this one is not (tests/test_refusals.py has the
others: one clear line and a non-zero exit, no traceback)."""

import json
import logging
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from src.common.errors import UserError
from src.training.distributed import World
from tests.helpers import REPO, RunMain, Train

HEAVY_MODULES = ("torch", "torchvision", "wandb", "matplotlib")


@pytest.mark.parametrize(
    "args",
    [("--help",), ("--cfg", "job"), ("model=cnn", "model.hidden_dim=10"), ("dm.val_prop=1.5",)],
    ids=["help", "cfg", "rejected-override", "invalid-value"],
)
def test_paths_that_compute_nothing_do_not_import_torch(args: tuple[str, ...]) -> None:
    result = subprocess.run(
        [sys.executable, "-X", "importtime", str(REPO / "main.py"), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    # -X importtime writes one line per imported module to stderr: "import time: ... | name".
    imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines() if "import time:" in line}
    assert imported, result.stderr
    assert not {name.split(".")[0] for name in imported} & set(HEAVY_MODULES)


def test_a_missing_gpu_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    # CI has no GPU: pretend to have two, and ask for the fourth.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(UserError, match=re.escape("gpu=3 does not exist: this machine has 2 CUDA device(s)")):
        World().device(3)


def test_without_cuda_the_run_says_so_and_uses_the_cpu(train: Train, caplog: pytest.LogCaptureFixture) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with caplog.at_level(logging.INFO):
        train("gpu=1", "opt.epochs=1", "model.hidden_dim=16")
    assert "CUDA is not available; running on the CPU." in caplog.messages


@pytest.mark.slow
@pytest.mark.parametrize("root", ["data", "~/data"], ids=["relative", "home"])
def test_paths_mean_where_the_program_started_even_where_hydra_changes_the_directory(
    run_main: RunMain, mnist_root: Path, tmp_path: Path, root: str
) -> None:
    (tmp_path / "data").symlink_to(mnist_root)
    result = run_main(
        "hydra.job.chdir=True",
        f"dm.root='{root}'",  # quoted for Hydra, which takes a value starting with ~ for a deletion
        "dm.download=false",
        "wandb.mode=offline",
        "wandb.dir=wb",
        "model.hidden_dim=8",
        "opt.epochs=1",
        "hydra.run.dir=out",
        env={"HOME": str(tmp_path)},
    )
    assert result.returncode == 0, result.stderr
    record = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert record["data"]["source"] == "mnist"
    assert (tmp_path / "wb" / "wandb").is_dir()
    # The changes of a checkout that differs from its commit are saved beside the result.
    diff = [record["code"]["diff"]] if record["code"]["diff"] else []
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == sorted(
        [".hydra", ".run.lock", "checkpoint.pt", "main.log", "metrics.json", *diff]
    )
    assert not (tmp_path / "~").exists()
