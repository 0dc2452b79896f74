"""The cuda tier: the GPU path, run on a real GPU. Skipped where CUDA is absent; `scripts/gpu-check.sh`
runs it on a GPU machine (docs/gpu.md).

    .venv/bin/pytest -m cuda
"""

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, cast

import pytest
import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile

from src.common.errors import UserError
from src.datasets.cmnist import CMNISTDataModule
from src.optimisation import OptimisationCfg
from src.training.checkpoint import CHECKPOINT_FILE
from src.training.loop import TrainingState, fit
from tests.helpers import REPO, RunMain, program_env

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA, which this machine lacks (docs/gpu.md)"),
]
SMALL = ("model.hidden_dim=64", "opt.lr=1e-3")  # learns the small test MNIST in two epochs


def metrics(out: Path) -> dict[str, float]:
    record = json.loads((out / "metrics.json").read_text())
    assert record["status"] == "finished"
    return record["metrics"]


def saved_device(out: Path) -> str:
    """The device of the weights in the run's checkpoint (loaded where they were saved)."""
    saved = torch.load(out / CHECKPOINT_FILE, weights_only=True)
    return next(iter(saved["model"].values())).device.type


def test_the_default_run_trains_on_the_gpu(run_main: RunMain, tmp_path: Path) -> None:
    result = run_main("hydra.run.dir=out")  # gpu=0 by default
    assert result.returncode == 0, result.stderr
    assert "Starting a run with seed 42 and GPU 0." in result.stdout
    assert "CUDA is not available" not in result.stdout
    assert saved_device(tmp_path / "out") == "cuda"
    assert metrics(tmp_path / "out")["val/acc"] > 0.5


@pytest.mark.parametrize("model", ["fcn", "cnn"])
def test_the_same_seed_gives_the_same_metrics_bit_for_bit_on_the_gpu(
    run_main: RunMain, tmp_path: Path, model: str
) -> None:
    runs = {"a": "seed=7", "b": "seed=7", "c": "seed=8"}
    for out, seed in runs.items():
        result = run_main(seed, f"model={model}", "opt.epochs=1", "dm.correlation=0.5", f"hydra.run.dir={out}")
        assert result.returncode == 0, result.stderr
        assert "deterministic" not in result.stderr  # PyTorch's warning for an operation without such a kernel
    results = {out: metrics(tmp_path / out) for out in runs}
    assert results["a"] == results["b"]
    assert results["a"] != results["c"]


def test_mixed_precision_trains_to_the_same_accuracy_band(run_main: RunMain, tmp_path: Path) -> None:
    for out, precision in {"fp32": "false", "bf16": "true"}.items():
        result = run_main(*SMALL, f"opt.mixed_precision={precision}", f"hydra.run.dir={out}")
        assert result.returncode == 0, result.stderr
    fp32, bf16 = metrics(tmp_path / "fp32"), metrics(tmp_path / "bf16")
    assert fp32["val/acc"] > 0.5
    assert abs(bf16["val/acc"] - fp32["val/acc"]) <= 0.05
    assert bf16 != fp32  # bfloat16 rounds differently: the setting did change the arithmetic


@pytest.mark.parametrize(("saved_on", "continued_on"), [("0", "-1"), ("-1", "0")], ids=["gpu-to-cpu", "cpu-to-gpu"])
def test_a_checkpoint_continues_on_the_other_device(
    mnist_root: Path, run_main: RunMain, tmp_path: Path, saved_on: str, continued_on: str
) -> None:
    # Five epochs of 120 steps: time to stop the run after its first checkpoint and before its end.
    args = (*SMALL, "opt.epochs=5", "opt.batch_size=8", "hydra.run.dir=out")
    out = tmp_path / "out"
    process = subprocess.Popen(
        [sys.executable, str(REPO / "main.py"), *args, f"gpu={saved_on}"],
        cwd=tmp_path,
        env=program_env(mnist_root),  # as `run_main` runs it
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    while not (out / CHECKPOINT_FILE).exists():  # written at the end of epoch 1
        assert process.poll() is None, process.communicate()
        time.sleep(0.01)
    process.send_signal(signal.SIGINT)  # training stops after the current step, and saves
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stdout + stderr
    assert saved_device(out) == ("cuda" if saved_on == "0" else "cpu")

    result = run_main(*args, f"gpu={continued_on}")
    assert result.returncode == 0, result.stderr
    assert re.search(r"Continuing from out/checkpoint.pt: \d epochs and \d+ steps done.", result.stdout)
    assert saved_device(out) == ("cuda" if continued_on == "0" else "cpu")
    assert metrics(out)["val/acc"] > 0.5


def test_the_data_crosses_to_the_device_once_not_for_each_batch(mnist_root: Path) -> None:
    data = CMNISTDataModule(root=mnist_root).build(seed=0)
    copies: list[int] = []
    for batch_size in (256, 25):  # 960 training images: 4 batches, then 39
        torch.manual_seed(0)  # pyright: ignore[reportUnknownMemberType]
        model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 28 * 28, 10)).cuda()
        state = TrainingState(
            model=model, optimizer=torch.optim.SGD(model.parameters()), generator=torch.Generator().manual_seed(0)
        )
        opt = OptimisationCfg(epochs=1, batch_size=batch_size)
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as profiler:
            fit(state, data, opt=opt, on_epoch_end=lambda _state: None, stop_requested=lambda: False)
        copies.append(host_to_device_copies(profiler))
    # The splits' tensors (images, labels, groups and colours of training and validation) and the epoch's order.
    assert copies[0] == copies[1] > 0, copies


def host_to_device_copies(profiler: profile) -> int:
    """The copies from the host's memory to the GPU's that the profiler saw ("Memcpy HtoD (Pageable -> Device)")."""
    events = cast(list[Any], profiler.key_averages())  # of `FunctionEventAvg`, which has no type hints
    return sum(event.count for event in events if event.key.startswith("Memcpy HtoD"))


def test_the_optimiser_is_fused_on_the_gpu_where_it_has_a_fused_kernel() -> None:
    model = nn.Linear(4, 2).cuda()
    model(torch.ones(1, 4, device="cuda")).sum().backward()
    assert OptimisationCfg().build(model.parameters()).param_groups[0]["fused"] is True  # AdamW
    # Adagrad's fused kernel is for the CPU only: on the GPU it is PyTorch's choice (foreach)...
    adagrad = OptimisationCfg(optimizer_cls="torch.optim.Adagrad")
    on_gpu = adagrad.build(model.parameters())
    assert not on_gpu.param_groups[0]["fused"]
    # ...also for a run saved on the CPU, where it was fused.
    on_cpu = adagrad.build(nn.Linear(4, 2).parameters())
    assert on_cpu.param_groups[0]["fused"] is True
    on_gpu.load_state_dict(on_cpu.state_dict())
    assert not on_gpu.param_groups[0]["fused"]
    on_gpu.step()  # pyright: ignore[reportUnknownMemberType]
    # Asked for explicitly, it is one clear error, not a failure at the first step.
    fused_adagrad = OptimisationCfg(optimizer_cls="torch.optim.Adagrad", optimizer_kwargs={"fused": True})
    with pytest.raises(UserError, match=re.escape("torch.optim.Adagrad cannot be fused here")):
        fused_adagrad.build(model.parameters())


def test_a_gpu_that_does_not_exist_is_one_line(run_main: RunMain) -> None:
    count = torch.cuda.device_count()
    result = run_main(f"gpu={count}")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"Error: gpu={count} does not exist: this machine has {count} CUDA device(s), 0 to {count - 1}; "
        "use gpu=-1 for the CPU."
    )
