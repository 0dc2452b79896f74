"""Nothing lost: a run that is killed, or stopped with Ctrl-C, continues from its checkpoint to the same
result, bit for bit, as a run left alone."""

import csv
import json
import logging
import os
import resource
import shlex
import signal
from collections.abc import Generator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

import pytest
import torch

from src.common.errors import UserError
from src.training.checkpoint import CHECKPOINT_FILE, Checkpoint
from src.training.stopping import SLURM_STOP_SIGNAL, stop_on_signals
from tests.helpers import (
    ONE_THREAD,
    REPO,
    STOPPABLE,
    TINY,
    RunMain,
    Train,
    metrics_record,
    small_state,
    start,
    wait_for,
)
from tests.wandb_records import logged, read_records

WANDB = ("wandb.mode=offline", "wandb.dir=wb")
TIMEOUT_S = 120


@pytest.fixture(scope="module")
def uninterrupted(mnist_root: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """The output directory and metrics.json of a run of STOPPABLE that nothing stopped."""
    cwd = tmp_path_factory.mktemp("uninterrupted")
    process = start(mnist_root, cwd, *STOPPABLE, "hydra.run.dir=out", env=ONE_THREAD)
    stdout, stderr = process.communicate(timeout=TIMEOUT_S)
    assert process.returncode == 0, stdout + stderr
    return cwd / "out", metrics_record(cwd / "out")


@pytest.mark.slow
def test_a_killed_run_continues_to_the_same_metrics(
    uninterrupted: tuple[Path, dict[str, Any]], mnist_root: Path, run_main: RunMain, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    process = start(mnist_root, tmp_path, *STOPPABLE, "hydra.run.dir=out", env=ONE_THREAD)
    wait_for(out / CHECKPOINT_FILE, process)  # written at the end of epoch 1, by a rename
    process.kill()  # SIGKILL: no handler, no clean-up
    process.communicate(timeout=TIMEOUT_S)
    assert not (out / "metrics.json").exists()  # killed within training

    result = run_main(*STOPPABLE, "hydra.run.dir=out", env=ONE_THREAD)
    assert result.returncode == 0, result.stderr
    assert "Continuing from out/checkpoint.pt: 1 epoch and 0 steps done." in result.stdout
    assert metrics_record(out) == uninterrupted[1]  # every metric, bit for bit


@pytest.mark.slow
def test_ctrl_c_saves_finishes_and_records_the_run_which_then_continues_to_the_same_metrics(
    uninterrupted: tuple[Path, dict[str, Any]], mnist_root: Path, run_main: RunMain, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    process = start(mnist_root, tmp_path, *STOPPABLE, *WANDB, "hydra.run.dir=out", env=ONE_THREAD)
    wait_for(out / CHECKPOINT_FILE, process)
    process.send_signal(signal.SIGINT)  # in epoch 2: training stops after the current step
    stdout, stderr = process.communicate(timeout=TIMEOUT_S)
    assert process.returncode == 130, stdout + stderr
    assert "Traceback" not in stdout + stderr
    assert (
        "Interrupted: saved in out/checkpoint.pt; to continue, run: python main.py --experimental-rerun out" in stdout
    )
    record = metrics_record(out)
    assert (record["status"], record["epoch"], record["data"]["source"], record["metrics"]) == (
        "interrupted",
        1,
        "mnist",
        {},
    )
    # The W&B run was finished, with the exit code.
    (interrupted,) = (tmp_path / "wb" / "wandb").glob("offline-run-*")
    exits = [record["exit"] for record in read_records(next(interrupted.glob("run-*.wandb"))) if "exit" in record]
    assert exits[0]["exitCode"] == 130

    result = run_main("--experimental-rerun", "out", env=ONE_THREAD)  # as the message says
    assert result.returncode == 0, result.stderr
    assert "Continuing from out/checkpoint.pt: 1 epoch and " in result.stdout
    assert metrics_record(out) == uninterrupted[1]
    # The W&B run continues under the same id (offline, each start writes a directory of its own).
    (continued,) = set((tmp_path / "wb" / "wandb").glob("offline-run-*")) - {interrupted}
    assert continued.name.rsplit("-", 1)[1] == interrupted.name.rsplit("-", 1)[1]
    _, history = logged(next(continued.glob("run-*.wandb")))
    assert [row["epoch"] for row in history if "epoch" in row] == [2, 3]
    assert any("test/acc" in row for row in history)


def snapshot(directory: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under `directory`: its contents and the time it was last written."""
    return {
        str(path.relative_to(directory)): (path.read_bytes(), path.stat().st_mtime_ns)
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    }


@pytest.mark.slow
def test_a_checkpoint_is_only_continued_with_its_own_settings_and_the_refused_run_changes_nothing(
    uninterrupted: tuple[Path, dict[str, Any]], run_main: RunMain
) -> None:
    out = uninterrupted[0]
    before = snapshot(out)
    result = run_main(*STOPPABLE, "opt.lr=1e-3", "gpu=-1", f"hydra.run.dir={out}", env=ONE_THREAD)
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"Error: {out / CHECKPOINT_FILE} is the checkpoint of a run with other settings (opt.lr: 5e-05 -> 0.001); "
        "continue it with the settings it was started with, or choose another output directory."
    )
    # Not a byte, not a time: .hydra/ keeps the record of the run that is there, and its log is as it was.
    assert snapshot(out) == before
    # So Hydra's rerun of that run still works (a finished one tests its model again, to the same metrics).
    rerun = run_main("--experimental-rerun", str(out), env=ONE_THREAD)
    assert rerun.returncode == 0, rerun.stderr
    assert metrics_record(out) == uninterrupted[1]


@pytest.mark.slow
def test_a_second_run_in_an_output_directory_in_use_is_refused(
    mnist_root: Path, run_main: RunMain, tmp_path: Path
) -> None:
    first = start(mnist_root, tmp_path, *STOPPABLE, "opt.epochs=30", "hydra.run.dir=out", env=ONE_THREAD)
    wait_for(tmp_path / "out" / ".hydra" / "hydra.yaml", first)  # saved once it holds the directory
    before = snapshot(tmp_path / "out" / ".hydra")
    second = run_main(*STOPPABLE, "opt.epochs=30", "hydra.run.dir=out", env=ONE_THREAD)
    assert second.returncode == 1
    assert second.stderr.strip() == (
        "Error: another run is working in the output directory out: wait until it ends, or choose another output "
        "directory."
    )
    assert snapshot(tmp_path / "out" / ".hydra") == before
    first.send_signal(signal.SIGINT)  # the first run was not disturbed: it stops as usual
    stdout, stderr = first.communicate(timeout=TIMEOUT_S)
    assert first.returncode == 130, stdout + stderr
    assert (
        "Interrupted: saved in out/checkpoint.pt; to continue, run: python main.py --experimental-rerun out" in stdout
    )


def test_a_finished_run_run_again_reports_its_metrics_without_running(
    train: Train, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    val_acc = train(*TINY)
    metrics_file = tmp_path / "out" / "metrics.json"
    written = metrics_file.stat().st_mtime_ns

    with caplog.at_level(logging.INFO):
        again = train(*TINY)

    assert again == val_acc
    assert metrics_file.stat().st_mtime_ns == written
    assert caplog.messages[-1] == (
        f"Already finished: val/acc={val_acc:.4f} (all metrics: out/metrics.json); not run again "
        "(to run it afresh, delete out/checkpoint.pt)."
    )
    assert not [message for message in caplog.messages if message.startswith(("Model architecture", "Test:"))]


def test_the_metrics_of_an_earlier_run_in_the_directory_are_not_reported(train: Train, tmp_path: Path) -> None:
    out = tmp_path / "out"
    train(*TINY, "seed=1")
    earlier = (out / "metrics.json").read_bytes()
    (out / CHECKPOINT_FILE).unlink()  # to run afresh, with other settings, in the same directory
    val_acc = train(*TINY, "seed=2")
    record = metrics_record(out)
    assert record != json.loads(earlier)  # trained, without a checkpoint to say that the metrics were its own
    # As if killed after its last checkpoint, before writing its metrics: metrics.json is the earlier run's.
    (out / "metrics.json").write_bytes(earlier)

    assert train(*TINY, "seed=2") == val_acc  # continued from its last checkpoint, and tested
    assert metrics_record(out) == record


@contextmanager
def file_size_limit(limit: int) -> Generator[None]:
    """Writes beyond `limit` bytes fail part of the way, as on a disk that fills up (EFBIG, not a signal)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, handler)


@pytest.mark.parametrize(
    ("disk", "reason"),
    [
        # The temporary file that the next save writes is /dev/full, where every write fails with ENOSPC.
        ("full", "[Errno 28] No space left on device"),
        # The disk fills up during the write: torch's writer fails with a RuntimeError.
        ("filling-up", "torch.save could not write it all: is the disk full?"),
    ],
)
def test_a_full_disk_leaves_the_previous_checkpoint_intact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, disk: str, reason: str
) -> None:
    monkeypatch.chdir(tmp_path)
    checkpoint = Checkpoint(path=tmp_path / "out" / CHECKPOINT_FILE, config={"seed": 1})
    checkpoint.path.parent.mkdir()
    saved = small_state(1, width=100_000)  # 800 kB of weights: the disk fills up while torch writes them
    saved.epoch = 1
    checkpoint.save(saved)
    saved.epoch = 2
    with pytest.raises(UserError) as error:
        if disk == "full":
            (checkpoint.path.parent / f"{CHECKPOINT_FILE}.{os.getpid()}.tmp").symlink_to("/dev/full")
            checkpoint.save(saved)
        else:
            with file_size_limit(checkpoint.path.stat().st_size // 2):
                checkpoint.save(saved)
    # Used as a library, without Hydra's record of the run to rerun: the advice is to call run() again.
    assert str(error.value) == (
        f"could not save the checkpoint out/{CHECKPOINT_FILE} ({reason}); the one saved before, if any, is intact: "
        "make room, then to continue, call run() again with the same config and output_dir=out"
    )
    assert not (checkpoint.path.parent / f"{CHECKPOINT_FILE}.{os.getpid()}.tmp").exists()

    restored = small_state(2, width=100_000)
    Checkpoint(path=checkpoint.path, config={"seed": 1}).restore(restored)  # the one of epoch 1
    assert restored.epoch == 1
    assert all(
        torch.equal(restored.model.state_dict()[name], value) for name, value in saved.model.state_dict().items()
    )


def test_a_damaged_checkpoint_is_an_error_not_a_new_start(tmp_path: Path) -> None:
    checkpoint = Checkpoint(path=tmp_path / CHECKPOINT_FILE, config={"seed": 1})
    checkpoint.save(small_state(1))
    checkpoint.path.write_bytes(checkpoint.path.read_bytes()[:100])
    with pytest.raises(UserError, match=r"^cannot read the checkpoint .*; move it away to start this run afresh\.$"):
        Checkpoint(path=checkpoint.path, config={"seed": 1})


def test_the_first_ctrl_c_sets_a_flag_and_the_second_interrupts() -> None:
    handler = signal.getsignal(signal.SIGINT)
    with stop_on_signals() as stop:
        assert not stop.requested
        signal.raise_signal(signal.SIGINT)
        assert stop.requested
        assert stop.requeue is None
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is handler


def test_the_slurm_signal_waits_for_the_checkpoint_where_submitit_handles_it() -> None:
    received: list[int] = []

    def submitit_handler(signum: int, frame: FrameType | None) -> None:
        received.append(signum)

    previous = signal.signal(SLURM_STOP_SIGNAL, submitit_handler)
    try:
        with stop_on_signals() as stop:
            signal.raise_signal(SLURM_STOP_SIGNAL)
            assert stop.requested
            assert received == []  # deferred: training saves its checkpoint first
            assert stop.requeue is not None
            stop.requeue()
            assert received == [SLURM_STOP_SIGNAL]
        assert signal.getsignal(SLURM_STOP_SIGNAL) is submitit_handler
    finally:
        signal.signal(SLURM_STOP_SIGNAL, previous)


def test_outside_submitit_the_slurm_signal_keeps_its_default_action() -> None:
    assert signal.getsignal(SLURM_STOP_SIGNAL) is signal.SIG_DFL
    with stop_on_signals():
        assert signal.getsignal(SLURM_STOP_SIGNAL) is signal.SIG_DFL


@pytest.mark.slow
def test_ctrl_c_in_a_multirun_stops_it_and_the_summary_shows_the_job_as_interrupted(
    mnist_root: Path, tmp_path: Path
) -> None:
    process = start(mnist_root, tmp_path, "--multirun", "seed=1,2", *STOPPABLE, "hydra.sweep.dir=sweep", env=ONE_THREAD)
    wait_for(tmp_path / "sweep" / "0" / CHECKPOINT_FILE, process)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=TIMEOUT_S)
    assert process.returncode == 130, stdout + stderr
    assert "Traceback" not in stdout + stderr
    with (tmp_path / "sweep" / "summary.csv").open(newline="") as file:
        assert [(row["job"], row["status"]) for row in csv.DictReader(file)] == [("0", "interrupted")]
    command = ["python", str(REPO / "main.py"), "--multirun", "seed=1,2", *STOPPABLE, "hydra.sweep.dir=sweep"]
    assert stdout.rstrip().endswith(f"Interrupted jobs: 0; to continue the sweep, run: {shlex.join(command)}")
