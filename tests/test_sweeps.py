"""Multiruns end to end: the summary and pictures of a grid, run by the basic launcher and by submitit's, and
a killed grid sweep that continues (Optuna studies: tests/test_optuna.py)."""

import json
import shlex
import statistics
import time
from pathlib import Path

import pytest

from tests.helpers import (
    IN_JOBS,
    ONE_THREAD,
    TINY,
    RunMain,
    assert_pictures,
    fail_job,
    hydra_lines,
    read_csv,
    start,
)

pytestmark = pytest.mark.slow  # every test here runs main.py in subprocesses


def test_grid_summary_lists_every_job_and_averages_over_seeds(run_main: RunMain, tmp_path: Path) -> None:
    failing, env, program = fail_job(3, tmp_path)  # seed=43 model.num_hidden=2: the grid's last job
    result = run_main(
        "--multirun",
        "seed=42,43",
        "model.num_hidden=1,2",
        *TINY,
        *failing,
        "hydra.sweep.dir=sweep",
        env=env,
        program=program,
    )

    # The basic sweeper raises the job's error once all jobs have run; the summary is written anyway.
    assert result.returncode == 1
    assert "RuntimeError: injected failure" in result.stderr
    sweep = tmp_path / "sweep"
    rows = read_csv(sweep / "summary.csv")
    assert {row["job"]: (row["seed"], row["model.num_hidden"], row["status"]) for row in rows} == {
        "0": ("42", "1", "finished"),
        "1": ("42", "2", "finished"),
        "2": ("43", "1", "finished"),
        "3": ("43", "2", "failed"),
    }
    finished, failed = rows[:3], rows[3]
    accs = [float(row["val/acc"]) for row in finished]
    assert accs == sorted(accs, reverse=True)  # best first, failed jobs last
    assert failed["job"] == "3" and failed["val/acc"] == ""
    for row in finished:
        metrics = json.loads((sweep / row["job"] / "metrics.json").read_text())["metrics"]
        assert {name: float(row[name]) for name in metrics} == metrics
    assert "Summary of 4 jobs, best val/acc first" in result.stdout

    by_config = {row["model.num_hidden"]: row for row in read_csv(sweep / "summary_by_config.csv")}
    assert "seed" not in by_config["1"]
    accs_1 = [float(row["val/acc"]) for row in finished if row["model.num_hidden"] == "1"]
    assert (by_config["1"]["n"], by_config["1"]["failed"]) == ("2", "0")
    assert float(by_config["1"]["val/acc mean"]) == statistics.mean(accs_1)
    assert float(by_config["1"]["val/acc std"]) == statistics.stdev(accs_1)
    assert (by_config["2"]["n"], by_config["2"]["failed"], by_config["2"]["val/acc std"]) == ("1", "1", "")
    assert "Mean ± std over seeds" in result.stdout
    assert_pictures(result.stdout, tmp_path, "sweep", ["val_acc_by_config"])


def test_summary_collects_jobs_run_by_another_launcher(run_main: RunMain, tmp_path: Path) -> None:
    # submitit_local runs each job in a process of its own, which must be able to import `src`.
    result = run_main(
        "--multirun", "hydra/launcher=submitit_local", "seed=42,43", *TINY, "hydra.sweep.dir=sweep", env=IN_JOBS
    )

    assert result.returncode == 0, result.stderr
    rows = read_csv(tmp_path / "sweep" / "summary.csv")
    assert sorted((row["job"], row["seed"], row["status"]) for row in rows) == [
        ("0", "42", "finished"),
        ("1", "43", "finished"),
    ]
    (by_config,) = read_csv(tmp_path / "sweep" / "summary_by_config.csv")
    assert by_config["n"] == "2"
    assert_pictures(result.stdout, tmp_path, "sweep", ["val_acc_by_config"])


# Two epochs of about a second each: time to kill a job within its second epoch.
GRID = ("--multirun", "seed=1,2,3", "opt.epochs=2", "model.hidden_dim=256", "opt.batch_size=8")


def test_a_killed_grid_sweep_continues_with_the_command_it_printed(
    run_main: RunMain, mnist_root: Path, tmp_path: Path
) -> None:
    failing, env, program = fail_job(0, tmp_path)  # job 0 fails, job 1 finishes, job 2 is killed, as the sweep runs
    env |= ONE_THREAD
    # What the sweep computes when nothing stops it (FAILING_JOB=-1: no job fails).
    reference = run_main(*GRID, *failing, "hydra.sweep.dir=reference", env=env | {"FAILING_JOB": "-1"}, program=program)
    assert reference.returncode == 0, reference.stderr

    # Killed (SIGKILL: nothing runs after it) within job 2's second epoch, in its timestamped sweep directory.
    first = start(mnist_root, tmp_path, *GRID, *failing, env=env, program=program)
    try:
        deadline = time.monotonic() + 120
        while not list(tmp_path.glob("multirun/*/*/2/checkpoint.pt")):
            assert first.poll() is None, "the sweep ended before it could be killed"
            assert time.monotonic() < deadline, "job 2 saved no checkpoint in 120 s"
            time.sleep(0.01)
    finally:
        first.kill()
        stdout, _ = first.communicate()
    (sweep,) = tmp_path.glob("multirun/*/*")
    sweep_name = str(sweep.relative_to(tmp_path))
    (command,) = [line for line in hydra_lines(stdout) if line.startswith("If this sweep stops")]
    assert command.startswith(f"If this sweep stops, continue it with: python {program} --multirun seed=")
    assert not (sweep / "0" / "metrics.json").exists()  # failed
    finished_at = (sweep / "1" / "metrics.json").stat().st_mtime_ns
    assert not (sweep / "2" / "metrics.json").exists()  # killed within training

    words = shlex.split(command.split(": ", 1)[1])
    assert words[-1] == f"hydra.sweep.dir={sweep_name}"
    result = run_main(
        *words[2:], env=env | {"FAILING_JOB": "-1"}, program=program
    )  # as printed, after `python main.py`

    assert result.returncode == 0, result.stderr
    assert f"Continuing the sweep in {sweep_name}: finished jobs report their results, the others run." in (
        result.stdout
    )
    assert f"all metrics: {sweep_name}/1/metrics.json); not run again" in result.stdout
    assert (sweep / "1" / "metrics.json").stat().st_mtime_ns == finished_at
    assert f"Continuing from {sweep_name}/2/checkpoint.pt: 1 epoch and 0 steps done." in result.stdout
    rows = read_csv(sweep / "summary.csv")
    assert sorted((row["job"], row["status"]) for row in rows) == [(job, "finished") for job in "012"]
    for job in "012":  # every metric, bit for bit, as if the sweep had never stopped
        assert (sweep / job / "metrics.json").read_text() == (tmp_path / "reference" / job / "metrics.json").read_text()
    assert_pictures(result.stdout, tmp_path, sweep_name, ["val_acc_by_config"])

    # The directory of this sweep is not reused for another one: its jobs would be other configurations.
    other = run_main("--multirun", "seed=1,2", f"hydra.sweep.dir={sweep_name}", env=env)
    assert other.returncode == 1
    assert other.stderr.strip() == (
        f"Error: hydra.sweep.dir={sweep_name} holds a sweep of other overrides ({shlex.join(words[3:-1])}); "
        "continue it with those, in that order, or choose another sweep directory."
    )
    assert "Summary" not in other.stdout


def test_a_job_whose_training_diverges_fails_and_the_sweep_goes_on(run_main: RunMain, tmp_path: Path) -> None:
    result = run_main("--multirun", "opt.lr=1e30,1e-3", *TINY, "hydra.sweep.dir=sweep")

    # As for any job that raises: the others run, the summary lists it as failed, the sweep exits with its error.
    assert result.returncode == 1
    assert "Traceback" not in result.stdout + result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        "Error: the training loss became nan at epoch 1, step 2; training diverged: try a smaller opt.lr. "
        "The checkpoint of the last epoch, if any, is intact."
    )
    rows = read_csv(tmp_path / "sweep" / "summary.csv")
    assert {row["opt.lr"]: row["status"] for row in rows} == {"1e+30": "failed", "0.001": "finished"}
    assert not (tmp_path / "sweep" / "0" / "metrics.json").exists()
