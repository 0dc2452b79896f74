"""The thread budget (`ThreadBudget`): each process that trains takes its share of the cores it may run on,
for each launcher; and a result depends on the number of threads recorded with its settings, not on the
jobs that ran beside it."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from src.training.threads import ThreadBudget
from tests.conftest import REPO, SWEEP_DIR, RunMain, Train

CORES = len(os.sched_getaffinity(0))
TINY = ("model.hidden_dim=8", "opt.epochs=1")
LOCAL = "hydra/launcher=submitit_local"
# The jobs that submitit starts unpickle main.py's function, which imports `src`: from the repository.
IN_JOBS = {"PYTHONPATH": str(REPO)}
TIMEOUT_S = 240


def share(processes: int) -> int:
    """One process's threads where `processes` train at once on this machine's cores."""
    return max(1, CORES // processes)


def cores() -> str:
    return f"{CORES} core{'' if CORES == 1 else 's'}"


def threads(number: int) -> str:
    return f"{number} thread{'' if number == 1 else 's'}"


def budget_line(job_dir: Path) -> str:
    """What the run's log says of its threads."""
    lines = [line for line in (job_dir / "main.log").read_text().splitlines() if "CPU threads: " in line]
    assert len(lines) == 1, lines  # said once, by rank 0 alone
    return lines[0].split("CPU threads: ", 1)[1]


def metrics(run_dir: Path) -> dict[str, float]:
    record = json.loads((run_dir / "metrics.json").read_text())
    assert record["status"] == "finished"
    return record["metrics"]


def recorded_threads(job_dir: Path) -> int:
    """The number of threads in the settings that the run recorded (Hydra's record of it)."""
    return OmegaConf.load(job_dir / ".hydra" / "config.yaml").threads


@pytest.fixture
def torch_threads() -> Iterator[None]:
    """Give this process back the threads it had: a run in it sets them."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_the_share_is_the_cores_divided_among_the_processes_at_once() -> None:
    assert str(ThreadBudget(cores=4, jobs=2)) == "4 cores, 2 jobs at once: 2 threads each"
    assert str(ThreadBudget(cores=8, jobs=2, tasks=2, jobs_setting="hydra.sweeper.n_jobs=2")) == (
        "8 cores, 2 jobs of 2 processes at once (hydra.sweeper.n_jobs=2): 2 threads each"
    )
    assert ThreadBudget(cores=2, jobs=3).threads == 1  # never none
    assert ThreadBudget(cores=7, jobs=2).threads == 3  # never more threads than cores
    assert str(ThreadBudget(cores=2, slurm_cpus=24)) == (
        "2 cores for this task (SLURM's cpus_per_task=24; its CPU affinity has 2 cores): 2 threads"
    )


def test_a_run_alone_keeps_every_core(train: Train, caplog: pytest.LogCaptureFixture, torch_threads: None) -> None:
    torch.set_num_threads(1)
    with caplog.at_level(logging.INFO):
        train(*TINY)
    assert f"CPU threads: {cores()}, 1 job at once: {threads(CORES)} each." in caplog.messages
    assert torch.get_num_threads() == CORES


@pytest.mark.parametrize(("setting", "env"), [("threads=3", {}), ("threads=null", {"OMP_NUM_THREADS": "3"})])
def test_a_user_who_knows_better_sets_the_threads(
    *,
    setting: str,
    env: dict[str, str],
    train: Train,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    torch_threads: None,
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with caplog.at_level(logging.INFO):
        train(*TINY, setting)
    chooser = setting if not env else "OMP_NUM_THREADS=3"
    assert (
        f"CPU threads: 3 ({chooser}); the share of this process would be: {cores()}, 1 job at once: "
        f"{threads(CORES)} each."
    ) in caplog.messages
    assert torch.get_num_threads() == 3
    more = [record.message for record in caplog.records if record.levelno == logging.WARNING]
    assert more == ([f"{chooser} is more threads than the {cores()} this process may use."] if CORES < 3 else [])


@pytest.mark.slow
def test_a_process_takes_the_cores_of_its_cpu_affinity(mnist_root: Path, tmp_path: Path) -> None:
    # As SLURM (or `taskset`, here) narrows it: one core of the machine's.
    one_core = min(os.sched_getaffinity(0))
    command = [
        "taskset",
        "--cpu-list",
        str(one_core),
        sys.executable,
        str(REPO / "main.py"),
        *TINY,
        "hydra.run.dir=out",
    ]
    env = os.environ | {"HYDRA_EXAMPLE_DATA": str(mnist_root)}
    result = subprocess.run(
        command, check=False, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=TIMEOUT_S
    )
    assert result.returncode == 0, result.stderr
    assert budget_line(tmp_path / "out") == "1 core, 1 job at once: 1 thread each."
    assert recorded_threads(tmp_path / "out") == 1


@pytest.mark.slow
def test_the_basic_launcher_runs_jobs_one_after_another_with_every_core(run_main: RunMain, tmp_path: Path) -> None:
    result = run_main("--multirun", "seed=1,2", *TINY, f"hydra.sweep.dir={SWEEP_DIR}")
    assert result.returncode == 0, result.stderr
    for job in ("0", "1"):
        assert budget_line(tmp_path / SWEEP_DIR / job) == f"{cores()}, 1 job at once: {threads(CORES)} each."
        assert recorded_threads(tmp_path / SWEEP_DIR / job) == CORES


@pytest.mark.slow
@pytest.mark.parametrize(
    ("batch", "jobs_at_once"),
    [
        # Batches of two jobs, then one: Hydra's basic sweeper launches a batch at once.
        (("hydra.sweeper.max_batch_size=2",), {"0": 2, "1": 2, "2": 1}),
        # The whole sweep at once.
        ((), {"0": 3, "1": 3, "2": 3}),
    ],
    ids=["batches-of-2", "all-at-once"],
)
def test_jobs_that_submitit_local_runs_at_once_share_the_cores(
    run_main: RunMain, tmp_path: Path, batch: tuple[str, ...], jobs_at_once: dict[str, int]
) -> None:
    args = ("--multirun", LOCAL, "seed=1,2,3", *batch, *TINY, f"hydra.sweep.dir={SWEEP_DIR}")
    result = run_main(*args, env=IN_JOBS, timeout=TIMEOUT_S)
    assert result.returncode == 0, result.stderr
    setting = batch[0] if batch else "hydra.sweeper.max_batch_size=null: the whole sweep"
    for job, jobs in jobs_at_once.items():
        assert budget_line(tmp_path / SWEEP_DIR / job) == (
            f"{cores()}, {jobs} job{'' if jobs == 1 else 's'} at once ({setting}): {threads(share(jobs))} each."
        )
        assert recorded_threads(tmp_path / SWEEP_DIR / job) == share(jobs)


@pytest.mark.slow
def test_the_slots_of_an_optuna_sweep_share_the_cores(run_main: RunMain, tmp_path: Path) -> None:
    study = ("hydra/sweeper=fcn_params", "hydra.sweeper.n_trials=2", "hydra.sweeper.n_jobs=2")
    result = run_main("--multirun", *study, LOCAL, *TINY, f"hydra.sweep.dir={SWEEP_DIR}", env=IN_JOBS)
    assert result.returncode == 0, result.stderr
    for job in ("0", "1"):
        expected = f"{cores()}, 2 jobs at once (hydra.sweeper.n_jobs=2): {threads(share(2))} each."
        assert budget_line(tmp_path / SWEEP_DIR / job) == expected
        assert recorded_threads(tmp_path / SWEEP_DIR / job) == share(2)


@pytest.mark.slow
def test_the_processes_of_a_distributed_run_share_the_cores(run_main: RunMain, tmp_path: Path) -> None:
    two_tasks = (LOCAL, "hydra.launcher.tasks_per_node=2")
    result = run_main("--multirun", *two_tasks, *TINY, f"hydra.sweep.dir={SWEEP_DIR}", env=IN_JOBS)
    assert result.returncode == 0, result.stderr
    job = tmp_path / SWEEP_DIR / "0"
    expected = f"{cores()}, 1 job of 2 processes at once (hydra.sweeper.max_batch_size=null: the whole sweep): "
    assert budget_line(job) == f"{expected}{threads(share(2))} each."
    assert recorded_threads(job) == share(2)


@pytest.mark.slow
def test_a_slurm_task_takes_its_cpus_per_task(run_main: RunMain, slurm_env: dict[str, str], sweep_dir: Path) -> None:
    slurm = ("hydra/launcher=slurm/kyiv", "hydra.launcher.cpus_per_task=1", "dm.download=false")
    result = run_main("--multirun", *slurm, *TINY, f"hydra.sweep.dir={SWEEP_DIR}", env=slurm_env, timeout=TIMEOUT_S)
    assert result.returncode == 0, result.stderr
    assert budget_line(sweep_dir / "0") == "1 core for this task (SLURM's cpus_per_task=1): 1 thread."
    assert recorded_threads(sweep_dir / "0") == 1


@pytest.mark.slow
def test_a_result_is_the_same_alone_and_in_a_parallel_sweep(run_main: RunMain, tmp_path: Path) -> None:
    # Wide enough that PyTorch splits its work among threads, and so that their number changes the last bits.
    settings = ("model.hidden_dim=256", "opt.epochs=1")
    sweep = run_main("--multirun", LOCAL, "seed=1,2", *settings, f"hydra.sweep.dir={SWEEP_DIR}", env=IN_JOBS)
    assert sweep.returncode == 0, sweep.stderr
    in_sweep = tmp_path / SWEEP_DIR / "0"
    assert recorded_threads(in_sweep) == share(2)
    # The job's settings, as it recorded them (its threads among them), run alone on the machine.
    alone = run_main("seed=1", *settings, f"threads={recorded_threads(in_sweep)}", "hydra.run.dir=alone")
    assert alone.returncode == 0, alone.stderr
    assert metrics(tmp_path / "alone") == metrics(in_sweep)  # every metric, bit for bit
