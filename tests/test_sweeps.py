"""Multiruns end to end: the sweep summary of a grid, run by the basic launcher and by submitit's
(Optuna studies: tests/test_optuna.py)."""

import csv
import json
import statistics
from pathlib import Path

import pytest

from tests.conftest import REPO, RunMain

pytestmark = pytest.mark.slow  # every test here runs main.py in subprocesses

# Small, fast jobs that still train and evaluate.
TINY = ("model.hidden_dim=16", "opt.epochs=1")
# An optimiser that raises in one job, like an experiment that crashes (rather than one with wrong
# settings, which main.py turns into an exit of the whole multirun).
FAILING_OPTIMIZER = """
import os

import torch
from hydra.core.hydra_config import HydraConfig


class AdamWFailingInOneJob(torch.optim.AdamW):
    def __init__(self, *args, **kwargs):
        if HydraConfig.get().job.num == int(os.environ["FAILING_JOB"]):
            raise RuntimeError("injected failure")
        super().__init__(*args, **kwargs)
"""


def fail_job(job: int, tmp_path: Path) -> tuple[tuple[str, ...], dict[str, str]]:
    """The overrides that make job number `job` of a multirun raise, and the environment they need."""
    module_dir = tmp_path / "injected"
    module_dir.mkdir()
    (module_dir / "failing_optimizer.py").write_text(FAILING_OPTIMIZER)
    overrides = ("opt.optimizer_cls=failing_optimizer.AdamWFailingInOneJob", "opt.allowed_modules=[failing_optimizer]")
    return overrides, {"PYTHONPATH": str(module_dir), "FAILING_JOB": str(job)}


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as file:
        return list(csv.DictReader(file))


def test_grid_summary_lists_every_job_and_averages_over_seeds(run_main: RunMain, tmp_path: Path) -> None:
    failing, env = fail_job(3, tmp_path)  # seed=43 model.num_hidden=2: the grid's last job
    result = run_main(
        "--multirun", "seed=42,43", "model.num_hidden=1,2", *TINY, *failing, "hydra.sweep.dir=sweep", env=env
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


def test_summary_collects_jobs_run_by_another_launcher(run_main: RunMain, tmp_path: Path) -> None:
    # submitit_local runs each job in a process of its own, which must be able to import `src`.
    env = {"PYTHONPATH": str(REPO)}
    result = run_main(
        "--multirun", "hydra/launcher=submitit_local", "seed=42,43", *TINY, "hydra.sweep.dir=sweep", env=env
    )

    assert result.returncode == 0, result.stderr
    rows = read_csv(tmp_path / "sweep" / "summary.csv")
    assert sorted((row["job"], row["seed"], row["status"]) for row in rows) == [
        ("0", "42", "finished"),
        ("1", "43", "finished"),
    ]
    (by_config,) = read_csv(tmp_path / "sweep" / "summary_by_config.csv")
    assert by_config["n"] == "2"
