"""The command line's fast paths and its errors: one clear line and a non-zero exit, no traceback."""

import logging
import re
import subprocess
import sys

import pytest
import torch

from src.distributed import World
from src.errors import UserError
from tests.conftest import REPO, RunMain, Train

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


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ("model=cnn", "model.hidden_dim=10"),
            "Could not override 'model.hidden_dim'.\n"
            "To append to your config use +model.hidden_dim=10\n"
            "Key 'hidden_dim' not in 'SimpleCNNFactory'",
        ),
        (("opt.lr=fast",), "Value 'fast' of type 'str' could not be converted to Float"),
        (("model=transformer",), "Could not find 'model/transformer'"),
        (("dm.val_prop=1.5",), "Error: dm.val_prop=1.5 must be strictly between 0 and 1."),
        (("opt.lr=-1",), "Error: opt.lr=-1.0 must be positive."),
        (("dm.num_colors=0",), "Error: dm.num_colors=0 must be between 1 and 10."),
        (("dm.colors=[3]", "dm.num_colors=2"), "Error: dm.colors has 3, which is not a palette entry: use 0 to 1."),
        (("+dm.label_map={0: 1}",), "Error: dm.label_map={0: 1} must map to the labels 0 to 0."),
        (("model=single_linear_layer", "model.hidden_dim=20"), "Error: model.hidden_dim=20 has no effect without"),
        (("gpu=-2",), "Error: gpu=-2 is not a device"),
        (("model=cnn", "model.kernel_size=13"), "Error: model.kernel_size=13 is too large for 28x28 images"),
        (("opt.optimizer_cls=torch.nn.Linear",), "Error: opt.optimizer_cls=torch.nn.Linear is not an optimiser"),
        (("+opt.optimizer_kwargs={warp: 9}",), "Error: opt.optimizer_kwargs={'warp': 9} do not fit"),
        (
            ("+opt.optimizer_kwargs={betas: [2, 0.9]}",),
            "Error: opt.optimizer_kwargs={'betas': [2, 0.9]} do not fit torch.optim.AdamW: Invalid beta parameter",
        ),
        (("dm.digits=MNIST", "dm.root=nowhere", "dm.download=false"), "Error: dm.digits=MNIST, but there is no"),
    ],
)
def test_bad_input_gets_one_clear_message(run_main: RunMain, args: tuple[str, ...], message: str) -> None:
    result = run_main(*args)
    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


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
