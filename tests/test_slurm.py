"""`hydra/launcher=slurm/kyiv` on a real SLURM cluster: the throw-away one of scripts/slurm-cluster.sh.

`.ci/run` starts that cluster before `make test`. Elsewhere these tests skip unless you start it
yourself, as root: `scripts/slurm-cluster.sh start` (and `stop` when you are done).
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shlex
import signal
import subprocess
import sys
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import torch
from optuna.trial import TrialState

from src.training.checkpoint import CHECKPOINT_FILE
from tests.helpers import (
    ONE_THREAD,
    PRUNED_STUDY,
    STOPPABLE,
    SWEEP_DIR,
    RunMain,
    load_study,
    program_trusting,
    start,
    start_sweep,
    submitit_task_folders,
    summary_rows,
    wait_for,
)

pytestmark = pytest.mark.slow  # every test here runs main.py in subprocesses

LAUNCHER = "hydra/launcher=slurm/kyiv"
# Small and fast, and never a download: data source "mnist" in a job's metrics.json then proves
# that HYDRA_EXAMPLE_DATA, which `run_main` sets, reached the SLURM job.
FAST = ("opt.epochs=1", "dm.download=false")
TIMEOUT_S = 180  # for one multirun: all its jobs, queueing included
KILL_TASK = "HYDRA_EXAMPLE_TEST_KILL_TASK"  # see SelfKillingSGD
# A submitit log line: `submitit INFO (2024-05-16 18:40:47,580) - Starting with JobEnvironment(...)`.
SUBMITIT_LOG_TIME = re.compile(r"^submitit \w+ \((?P<time>[^)]+)\) - ", re.MULTILINE)


class SelfKillingSGD(torch.optim.SGD):
    """SGD, except in the SLURM array task named by $HYDRA_EXAMPLE_TEST_KILL_TASK: that job dies hard.

    The jobs find it as `opt.optimizer_cls=tests.test_slurm.SelfKillingSGD` (the repository is on
    their PYTHONPATH), so src/ needs no test hook. SIGKILL leaves no Python exception and no result
    for submitit: the job just ends, as when it runs out of memory. The variable reaches the jobs
    because sbatch passes on the submitting environment (its default, `--export=ALL`).
    """

    def __init__(self, params: Iterable[torch.Tensor], **kwargs: Any) -> None:
        kill_task = os.environ.get(KILL_TASK)
        if kill_task is not None and kill_task == os.environ.get("SLURM_ARRAY_TASK_ID"):
            os.kill(os.getpid(), signal.SIGKILL)
        super().__init__(params, **kwargs)


@pytest.mark.parametrize(
    ("sweep", "num_jobs"),
    [
        # The README's SLURM commands; model.hidden_dim=16 keeps the first one small.
        (("seed=42,43", "model.hidden_dim=16"), 2),
        (("seed=42,43", "model.hidden_dim=10", "model.num_hidden=1,2,3", "gpu=0"), 6),
    ],
    ids=["2-seeds", "6-job-grid"],
)
def test_a_multirun_is_one_job_array_whose_metrics_come_back(
    run_main: RunMain, slurm_env: dict[str, str], sweep_dir: Path, sweep: tuple[str, ...], num_jobs: int
) -> None:
    args = ("--multirun", *sweep, LAUNCHER, *FAST, f"hydra.sweep.dir={SWEEP_DIR}")
    result = run_main(*args, env=slurm_env, timeout=TIMEOUT_S)
    assert result.returncode == 0, result.stderr

    (script,) = _submission_scripts(sweep_dir)
    for line in (
        f"#SBATCH --array=0-{num_jobs - 1}%",  # one array of all jobs, not one sbatch per job
        "#SBATCH --partition=kyiv",
        "#SBATCH --cpus-per-task=24",
        "#SBATCH --gres=gpu:1",
        "#SBATCH --time=99999",
        "#SBATCH --job-name=hydra-example",
        "#SBATCH --signal=USR2@120",  # the warning before preemption or the time limit
    ):
        assert line in script
    # The jobs run the Python that ran main.py (the venv's, under `make test`), so they have its packages.
    assert f"{shlex.quote(sys.executable)} -u -m submitit.core._submit" in script

    rows = summary_rows(sweep_dir)
    assert len(rows) == num_jobs
    for row in rows:
        record = json.loads((sweep_dir / row["job"] / "metrics.json").read_text())
        assert row["status"] == record["status"] == "finished"
        assert record["data"]["source"] == "mnist"
        assert float(row["val/acc"]) == record["metrics"]["val/acc"]
    # Every combination of the sweep ran once.
    combinations = {(row["seed"], row.get("model.num_hidden")) for row in rows}
    assert len(combinations) == num_jobs
    _assert_no_warnings(result, sweep_dir)


def test_an_optuna_sweep_keeps_its_slots_busy_with_slurm_jobs(
    run_main: RunMain, slurm_env: dict[str, str], sweep_dir: Path
) -> None:
    sweeper = ("hydra/sweeper=fcn_params", "hydra.sweeper.n_trials=4", "hydra.sweeper.n_jobs=2")
    args = ("--multirun", *sweeper, LAUNCHER, "model.hidden_dim=16", *FAST, f"hydra.sweep.dir={SWEEP_DIR}")
    result = run_main(*args, env=slurm_env, timeout=TIMEOUT_S)
    assert result.returncode == 0, result.stderr

    # Each trial is a SLURM job of its own (no array), submitted as soon as one of the n_jobs=2 slots is free.
    scripts = _submission_scripts(sweep_dir)
    assert len(scripts) == 4
    assert not any("#SBATCH --array" in script for script in scripts)
    spans = sorted(_run_span(folder) for folder in _job_folders(sweep_dir))
    assert len(spans) == 4
    assert any(later[0] < earlier[1] for earlier, later in itertools.pairwise(spans)), "no two trials ran at once"

    rows = summary_rows(sweep_dir)
    assert [row["status"] for row in rows] == ["finished"] * 4
    # What Optuna was told is what the jobs measured.
    best = re.search(r"Best value: (\S+)", result.stdout + result.stderr)
    assert best is not None
    assert float(best.group(1)) == max(float(row["val/acc"]) for row in rows)
    _assert_no_warnings(result, sweep_dir)


def test_an_optuna_trial_is_pruned_on_slurm(mnist_root: Path, slurm_env: dict[str, str], sweep_dir: Path) -> None:
    # The study of tests/test_optuna.py whose trials 1 and 2 are pruned, each trial a SLURM job.
    process = start_sweep(mnist_root, sweep_dir.parent, *PRUNED_STUDY, LAUNCHER, env=slurm_env)
    output, _ = process.communicate(timeout=TIMEOUT_S)
    assert process.returncode == 0, output

    trials = load_study(sweep_dir.parent).trials
    assert [(trial.state, trial.last_step) for trial in trials] == [
        (TrialState.COMPLETE, 3),
        (TrialState.PRUNED, 2),
        (TrialState.PRUNED, 1),
    ]
    assert [row["status"] for row in summary_rows(sweep_dir)] == ["finished", "pruned at epoch 2", "pruned at epoch 1"]
    # A pruned trial's job ends as a job that succeeded.
    for folder in _job_folders(sweep_dir):
        assert "Job completed successfully" in "".join(path.read_text() for path in folder.glob("*_log.*"))


def test_two_sweep_processes_share_an_optuna_study_on_slurm(
    mnist_root: Path, slurm_env: dict[str, str], sweep_dir: Path
) -> None:
    # As from two allocations, or two login shells: the same command, the same study and sweep directory.
    command = ("--multirun", "hydra/sweeper=fcn_params", "hydra.sweeper.n_trials=4", "hydra.sweeper.n_jobs=1")
    args = (*command, LAUNCHER, "model.hidden_dim=16", *FAST, f"hydra.sweep.dir={SWEEP_DIR}")
    processes = [start_sweep(mnist_root, sweep_dir.parent, *args, env=slurm_env) for _ in range(2)]
    outputs = [process.communicate(timeout=TIMEOUT_S)[0] for process in processes]
    assert [process.returncode for process in processes] == [0, 0], outputs

    trials = load_study(sweep_dir.parent).trials
    assert [(trial.number, trial.state) for trial in trials] == [(n, TrialState.COMPLETE) for n in range(4)]
    assert sorted(row["job"] for row in summary_rows(sweep_dir)) == ["0", "1", "2", "3"]  # one directory each
    assert len(_submission_scripts(sweep_dir)) == 4  # and one SLURM job each


def test_a_job_that_dies_fails_the_sweep_without_hanging_it(
    run_main: RunMain, slurm_env: dict[str, str], sweep_dir: Path, tmp_path: Path
) -> None:
    killer = f"opt.optimizer_cls={SelfKillingSGD.__module__}.{SelfKillingSGD.__qualname__}"
    # A copy of the program that trusts this module's code; the jobs import its src/, and `tests` from the repository.
    program = program_trusting(SelfKillingSGD.__module__, tmp_path / "program")
    env = slurm_env | {KILL_TASK: "1", "PYTHONPATH": f"{program.parent}:{slurm_env['PYTHONPATH']}"}
    args = ("--multirun", "seed=42,43", LAUNCHER, killer, "model.hidden_dim=16", *FAST, f"hydra.sweep.dir={SWEEP_DIR}")
    # Bounded: submitit polls SLURM every few seconds, and gives a job that ended without a result
    # 15 s to write one (for slow shared file systems) before it reports the job as failed.
    result = run_main(*args, env=env, timeout=TIMEOUT_S, program=program)

    assert result.returncode != 0
    (array,) = {folder.name.split("_")[0] for folder in submitit_task_folders(sweep_dir)}
    # The error names the job, its state and what SLURM saw, with the job's stderr.
    assert f"Job {array}_1 (task: 0) with path" in result.stderr
    assert "has not produced any output (state: FAILED)" in result.stderr
    assert "task 0: Killed" in result.stderr
    # The sweep summary still comes: the job that finished, and the one that died.
    assert {row["job"]: row["status"] for row in summary_rows(sweep_dir)} == {"0": "finished", "1": "failed"}


# The signal that SLURM sends a job before it preempts it (where the cluster's PreemptParameters has
# `send_user_signal`) or before its time limit (`#SBATCH --signal`). The test sends it itself, with
# scancel: SLURM's timer checks time limits only every 30 s or so.
STOP_SIGNAL = "USR2"
# A short time limit: submitit then counts the signal as the time limit, not a preemption;
# signal_delay_s=1 keeps SLURM's own signal out of the test.
SHORT_TIME_LIMIT = ("hydra.launcher.timeout_min=1", "hydra.launcher.signal_delay_s=1")


@pytest.mark.parametrize(("case", "launcher_settings"), [("preempted", ()), ("timed-out", SHORT_TIME_LIMIT)])
def test_a_job_that_slurm_stops_is_requeued_and_ends_as_if_left_alone(
    mnist_root: Path, slurm_env: dict[str, str], sweep_dir: Path, case: str, launcher_settings: tuple[str, ...]
) -> None:
    # The same job twice: SLURM stops the first within its second epoch, the second runs undisturbed.
    process, task_folder = _stop_first_job(mnist_root, slurm_env, sweep_dir, *launcher_settings)
    output, _ = process.communicate(timeout=TIMEOUT_S)
    assert process.returncode == 0, output

    log = "".join(path.read_text() for path in sorted(task_folder.glob("*_log.*")))
    assert f"this job is {case}" in log
    assert "Stopped for SLURM (preemption or time limit): saved in sweep/0/checkpoint.pt." in log
    assert "Requeued job" in log
    assert re.search(r"Continuing from sweep/0/checkpoint.pt: 1 epoch and [1-9]\d* steps? done\.", log), log
    assert [row["status"] for row in summary_rows(sweep_dir)] == ["finished", "finished"]
    stopped, left_alone = (json.loads((sweep_dir / job_num / "metrics.json").read_text()) for job_num in "01")
    assert stopped["metrics"] == left_alone["metrics"]


def test_a_job_past_its_time_limit_more_than_max_num_timeout_times_is_not_requeued(
    mnist_root: Path, slurm_env: dict[str, str], sweep_dir: Path
) -> None:
    settings = (*SHORT_TIME_LIMIT, "hydra.launcher.max_num_timeout=0")
    process, _ = _stop_first_job(mnist_root, slurm_env, sweep_dir, *settings)
    output, _ = process.communicate(timeout=TIMEOUT_S)

    assert process.returncode != 0
    assert "Job not requeued because: timed-out too many times." in output
    # Nothing lost: the summary lists the job as interrupted, and its checkpoint is there to continue.
    assert {row["job"]: row["status"] for row in summary_rows(sweep_dir)} == {"0": "interrupted", "1": "finished"}
    assert json.loads((sweep_dir / "0" / "metrics.json").read_text())["status"] == "interrupted"
    assert (sweep_dir / "0" / CHECKPOINT_FILE).is_file()


def _stop_first_job(
    mnist_root: Path, slurm_env: dict[str, str], sweep_dir: Path, *launcher_settings: str
) -> tuple[subprocess.Popen[str], Path]:
    """Start a sweep of the same job twice, and send STOP_SIGNAL to the first once its first epoch is done;
    return the sweep's process (its output in stdout) and the first job's folder with its logs."""
    args = ("--multirun", "seed=42,42", LAUNCHER, *launcher_settings, *STOPPABLE, f"hydra.sweep.dir={SWEEP_DIR}")
    process = start(mnist_root, sweep_dir.parent, *args, env=ONE_THREAD | slurm_env, merge_output=True)
    wait_for(sweep_dir / "0" / CHECKPOINT_FILE, process)
    task_folder = submitit_task_folders(sweep_dir)[0]
    scancel = ["scancel", f"--signal={STOP_SIGNAL}", task_folder.name]
    subprocess.run(scancel, env=os.environ | slurm_env, check=True, timeout=10)
    return process, task_folder


def _submission_scripts(sweep_dir: Path) -> list[str]:
    """The sbatch scripts that submitit wrote: one per array, in `.submitit/<array job id>/`."""
    return [path.read_text() for path in sorted((sweep_dir / ".submitit").glob("*/*_submission.sh"))]


def _job_folders(sweep_dir: Path) -> list[Path]:
    """The folders of jobs submitted one by one (not as an array), `.submitit/<job id>/`, with their logs."""
    return sorted(folder for folder in (sweep_dir / ".submitit").glob("[0-9]*") if folder.name.isdigit())


def _run_span(task_folder: Path) -> tuple[datetime, datetime]:
    """When the task's Python started and when it finished, from submitit's own log lines."""
    times = [
        datetime.strptime(match["time"], "%Y-%m-%d %H:%M:%S,%f")
        for path in task_folder.glob("*_log.*")
        for match in SUBMITIT_LOG_TIME.finditer(path.read_text())
    ]
    return min(times), max(times)


def _assert_no_warnings(result: subprocess.CompletedProcess[str], sweep_dir: Path) -> None:
    """Nothing warns, neither main.py nor the jobs: no deprecations, no fallback to synthetic digits."""
    assert "warning" not in (result.stdout + result.stderr).lower(), result.stdout + result.stderr
    for path in (sweep_dir / ".submitit").glob("*/*_log.*"):
        assert "warning" not in path.read_text().lower(), path
