"""Every result says which data and which code produced it, and results of different data never mix: in a
run's metrics.json, a sweep's summary and an Optuna study (W&B: tests/test_wandb.py). Sweeps and studies
continued on other data are refused; code that changed between a run and its continuation is recorded."""

import hashlib
import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from omegaconf import OmegaConf
from optuna.trial import TrialState

from src.datasets.digits import MNIST_FILES
from src.sweeps.summary import record_job, summarise_sweep
from tests.helpers import (
    ONE_THREAD,
    REPO,
    STOPPABLE,
    STUDY,
    TINY,
    RunMain,
    Train,
    copy_program,
    fail_job,
    load_study,
    metrics_record,
    program_env,
    read_csv,
    start,
    start_sweep,
    summary_rows,
    wait_for,
    wait_until,
)

# Runs on the data they find, never on downloaded data: data settings that a sweep's jobs share. (A job of a
# multirun knows its overrides as the sweeper gives them: Python's `False`.)
NO_DOWNLOAD, AS_A_JOB_HAS_IT = "dm.download=false", "dm.download=False"


def git(*arguments: str, cwd: Path = REPO) -> str:
    return subprocess.run(["git", *arguments], cwd=cwd, capture_output=True, text=True, check=True).stdout


def origin_of(raw: Path) -> str:
    """The origin that a run on the MNIST files in `raw` records: a hash of their contents, in torchvision's order."""
    digest = hashlib.sha256()
    for name in MNIST_FILES:
        digest.update((raw / name).read_bytes())
    return digest.hexdigest()[:16]


def test_a_result_records_the_data_and_the_code_that_produced_it(
    train: Train, mnist_root: Path, tmp_path: Path
) -> None:
    train(*TINY)

    record = metrics_record(tmp_path / "out")
    assert record["data"]["source"] == "mnist"
    assert record["data"]["origin"] == origin_of(mnist_root / "MNIST" / "raw")
    assert len(record["data"]["fingerprint"]) == 64  # of every tensor trained and evaluated on
    code = record["code"]
    assert code["commit"] == git("rev-parse", "HEAD").strip()
    assert code["dirty"] == bool(git("status", "--porcelain"))
    if code["dirty"]:  # a checkout with changes: they are saved beside the result
        assert (tmp_path / "out" / code["diff"]).read_bytes().startswith(b"diff --git")
    else:
        assert code["diff"] is None
    assert code["lock"] == hashlib.sha256((REPO / "requirements.lock").read_bytes()).hexdigest()[:16]
    assert code["versions"]["torch"].split("+")[0] == torch.__version__.split("+")[0]
    assert code["device"] == "cpu"
    assert record["code_before"] == []


@pytest.mark.slow
def test_outside_a_git_checkout_the_record_says_so(run_main: RunMain, tmp_path: Path) -> None:
    program = copy_program(tmp_path / "program")  # not in a git checkout: /tmp is in none

    result = run_main(*TINY, "hydra.run.dir=out", program=program)

    assert result.returncode == 0, result.stderr
    code = metrics_record(tmp_path / "out")["code"]
    assert (code["commit"], code["dirty"], code["diff"]) == (None, None, None)
    assert code["git"] == f"{tmp_path / 'program'} is not a git checkout: the code is known by its versions alone"


@pytest.mark.slow
def test_a_run_continued_with_other_code_says_so_and_records_both(
    run_main: RunMain, mnist_root: Path, tmp_path: Path
) -> None:
    program = copy_program(tmp_path / "program")
    for command in (("init", "-q"), ("add", "."), ("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "a")):
        git(*command, cwd=program.parent)
    commit = git("rev-parse", "HEAD", cwd=program.parent).strip()
    # Stopped with Ctrl-C in its second epoch ...
    process = start(mnist_root, tmp_path, *STOPPABLE, "hydra.run.dir=out", env=ONE_THREAD, program=program)
    wait_for(tmp_path / "out" / "checkpoint.pt", process)
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=120) == 130
    # ... a bug fixed, and continued.
    with (program.parent / "src" / "model.py").open("a") as file:
        file.write("# a fix\n")
    result = run_main("--experimental-rerun", "out", env=ONE_THREAD, program=program)

    assert result.returncode == 0, result.stderr
    record = metrics_record(tmp_path / "out")
    assert [code["commit"] for code in record["code_before"]] == [commit]
    assert record["code_before"][0]["dirty"] is False
    assert (record["code"]["commit"], record["code"]["dirty"]) == (commit, True)
    assert "+# a fix" in (tmp_path / "out" / record["code"]["diff"]).read_text()
    assert [line for line in result.stdout.splitlines() if line.startswith("WARNING")] == [
        f"WARNING: out/checkpoint.pt was saved by other code (commit {commit[:8]}) than this (commit {commit[:8]} + "
        f"changes {record['code']['diff'][5:13]}): the run continues, and its metrics.json records both."
    ]


def mnist_copy(mnist_root: Path, cwd: Path, change_labels: bool) -> Path:
    """A data root with a copy of the small MNIST, whose training labels are changed if `change_labels`."""
    raw = cwd / "copy" / "MNIST" / "raw"
    shutil.copytree(mnist_root / "MNIST" / "raw", raw)
    if change_labels:
        labels = (raw / "train-labels-idx1-ubyte").read_bytes()
        (raw / "train-labels-idx1-ubyte").write_bytes(labels[:8] + bytes((label + 1) % 10 for label in labels[8:]))
    return cwd / "copy"


@pytest.mark.slow
@pytest.mark.parametrize("elsewhere", ["no MNIST", "other MNIST"])
def test_a_grid_sweep_continued_on_other_data_is_refused(
    run_main: RunMain, mnist_root: Path, tmp_path: Path, elsewhere: str
) -> None:
    failing, env, program = fail_job(1, tmp_path)  # job 1 fails: the sweep is to be continued
    command = ("--multirun", "seed=1,2", *TINY, NO_DOWNLOAD, *failing, "hydra.sweep.dir=sweep")
    assert run_main(*command, env=env, program=program).returncode != 0
    other_root = tmp_path / "empty" if elsewhere == "no MNIST" else mnist_copy(mnist_root, tmp_path, True)

    # Continued where HYDRA_EXAMPLE_DATA names other data: job 0 has finished, job 1 would train on it.
    again = run_main(*command, env=env | {"FAILING_JOB": "-1", "HYDRA_EXAMPLE_DATA": str(other_root)}, program=program)

    assert again.returncode == 1
    other = "synthetic" if elsewhere == "no MNIST" else f"mnist {origin_of(other_root / 'MNIST' / 'raw')[:8]}"
    assert again.stderr.splitlines()[-1] == (
        f"Error: the sweep in sweep ran its jobs of these data settings ({AS_A_JOB_HAS_IT}) on mnist "
        f"{origin_of(mnist_root / 'MNIST' / 'raw')[:8]} data, and this job's data is {other}: continue the sweep on "
        "the data it started with (check dm.root, and HYDRA_EXAMPLE_DATA, which it defaults to), or choose another "
        "sweep directory."
    )
    assert not (tmp_path / "sweep" / "1" / "metrics.json").exists()  # nothing mixed into the sweep's results


@pytest.mark.slow
def test_a_stored_study_continued_on_other_data_is_refused(run_main: RunMain, tmp_path: Path) -> None:
    assert run_main(*STUDY, "hydra.sweeper.n_trials=1", *TINY, NO_DOWNLOAD, "hydra.sweep.dir=a").returncode == 0
    best = load_study(tmp_path).best_value

    elsewhere = {"HYDRA_EXAMPLE_DATA": str(tmp_path / "empty")}
    again = run_main(*STUDY, "hydra.sweeper.n_trials=2", *TINY, NO_DOWNLOAD, "hydra.sweep.dir=b", env=elsewhere)

    assert again.returncode == 1
    assert again.stderr.splitlines()[-1].startswith(
        f"Error: the study in fcn_params.journal ran its trials of these data settings ({AS_A_JOB_HAS_IT}) on mnist "
    )
    assert again.stderr.splitlines()[-1].endswith(
        "data, and this trial's data is synthetic: continue the study on the data it started with (check dm.root, "
        "and HYDRA_EXAMPLE_DATA, which it defaults to), or start a new study with another hydra.sweeper.study_name."
    )
    study = load_study(tmp_path)
    assert [trial.state for trial in study.trials if trial.state == TrialState.COMPLETE] == [TrialState.COMPLETE]
    assert study.best_value == best
    trial = study.trials[0]
    assert trial.user_attrs["data"] == metrics_record(tmp_path / "a" / "0")["data"]
    assert trial.user_attrs["code"] == metrics_record(tmp_path / "a" / "0")["code"]


@pytest.mark.slow
def test_a_summary_covers_the_jobs_its_sweep_launched_alone(run_main: RunMain, tmp_path: Path) -> None:
    # The sweep's directory holds earlier runs: a single run, and a job directory of another sweep.
    assert run_main(*TINY, "hydra.run.dir=sweep/earlier").returncode == 0
    assert run_main("--multirun", "seed=5", *TINY, "hydra.sweep.dir=other").returncode == 0
    shutil.copytree(tmp_path / "other" / "0", tmp_path / "sweep" / "7")

    result = run_main("--multirun", "seed=1", *TINY, "hydra.sweep.dir=sweep")

    assert result.returncode == 0, result.stderr
    assert [(row["job"], row["seed"], row["status"]) for row in summary_rows(tmp_path / "sweep")] == [
        ("0", "1", "finished")
    ]
    assert "Summary of 1 jobs" in result.stdout


def job_dir(
    sweep: Path, name: str, overrides: list[str], *, data: dict[str, str], code: dict[str, Any], acc: float
) -> None:
    """A job directory as a job of the sweep leaves it: Hydra's overrides, metrics.json, and its line in the
    sweep's record of the jobs it launched."""
    (sweep / name / ".hydra").mkdir(parents=True)
    OmegaConf.save(OmegaConf.create(overrides), sweep / name / ".hydra" / "overrides.yaml")
    metrics = {"val/acc": acc, "val/worst_group_acc": acc, "test/acc": acc, "test/worst_group_acc": acc}
    record: dict[str, Any] = {"status": "finished", "epoch": 1, "metrics": metrics, "data": data, "code": code}
    record["code_before"] = []
    (sweep / name / "metrics.json").write_text(json.dumps(record))
    record_job(sweep, sweep / name)


MNIST = {"source": "mnist", "origin": "1111111111111111", "fingerprint": "f" * 64}
SYNTHETIC = {"source": "synthetic", "origin": "synthetic", "fingerprint": "e" * 64}
CODE = {"commit": "a" * 40, "dirty": False, "diff": None}


def test_results_of_other_data_are_never_pooled_and_a_column_shows_their_data(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    jobs = (("0", 1, MNIST, 0.9), ("1", 2, MNIST, 0.8), ("2", 1, SYNTHETIC, 0.5), ("3", 2, SYNTHETIC, 0.3))
    for name, seed, data, acc in jobs:
        job_dir(tmp_path, name, [f"seed={seed}"], data=data, code=CODE, acc=acc)

    with caplog.at_level("INFO"):
        summarise_sweep(tmp_path)

    by_config = read_csv(tmp_path / "summary_by_config.csv")
    assert [(row["data"], row["n"], row["val/acc mean"]) for row in by_config] == [
        ("mnist 11111111", "2", str((0.9 + 0.8) / 2)),
        ("synthetic", "2", str((0.5 + 0.3) / 2)),
    ]
    header = caplog.messages[0].splitlines()[1].split()
    assert header[:4] == ["job", "status", "seed", "data"]
    rows = read_csv(tmp_path / "summary.csv")
    assert [row["data.source"] for row in rows] == ["mnist", "mnist", "synthetic", "synthetic"]
    assert {row["code.commit"] for row in rows} == {"a" * 40}


def test_a_column_shows_the_code_where_jobs_differ_in_it(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    job_dir(tmp_path, "0", ["seed=1"], data=MNIST, code=CODE, acc=0.9)
    changed = CODE | {"dirty": True, "diff": "diff-0123456789abcdef.patch"}
    job_dir(tmp_path, "1", ["seed=2"], data=MNIST, code=changed, acc=0.8)

    with caplog.at_level("INFO"):
        summarise_sweep(tmp_path)

    table = caplog.messages[0].splitlines()
    assert table[1].split()[:4] == ["job", "status", "seed", "code"]
    assert "commit aaaaaaaa + changes 01234567" in table[4]
    (by_config,) = read_csv(tmp_path / "summary_by_config.csv")  # the same data: pooled
    assert by_config["n"] == "2"


@pytest.mark.slow
def test_a_trial_run_again_is_a_rerun_in_the_summary_of_its_sweep(
    run_main: RunMain, mnist_root: Path, tmp_path: Path
) -> None:
    command = (*STUDY, "hydra.sweeper.n_trials=2", "hydra.sweeper.n_jobs=1", *STOPPABLE, "hydra.sweep.dir=sweep")
    first = start_sweep(mnist_root, tmp_path, *command)
    wait_until((tmp_path / "sweep" / "0" / "checkpoint.pt").exists, first, "trial 0's first epoch")
    first.send_signal(signal.SIGKILL)  # the sweep alone: its job (in its process) dies with it
    first.communicate(timeout=60)

    result = run_main(*command, env=ONE_THREAD)  # continued, in the same sweep directory

    assert result.returncode == 0, result.stderr
    rows = {row["job"]: row["status"] for row in summary_rows(tmp_path / "sweep")}
    # Trial 0, given up, ran again as the study's next trial, the first that the second sweep ran.
    assert rows == {"0": "run again as job 1", "1": "finished", "2": "finished"}
    assert not (tmp_path / "sweep" / "summary_by_config.csv").exists()  # no seed varied: nothing to pool


@pytest.mark.slow
def test_a_result_is_got_again_from_its_record(run_main: RunMain, mnist_root: Path, tmp_path: Path) -> None:
    assert run_main(*TINY, "seed=3", "hydra.run.dir=out").returncode == 0
    command = [sys.executable, str(REPO / "scripts" / "reproduce.py"), "out", str(tmp_path / "again")]

    def reproduce() -> subprocess.CompletedProcess[str]:
        env = program_env(mnist_root)
        return subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, check=False)

    result = reproduce()

    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines()[-1] == "Reproduced: the same metrics, bit for bit, on the same data."
    assert (tmp_path / "again" / "code" / "main.py").is_file()  # the recorded commit, with the recorded changes
    # A record that the code does not give: said, with the difference.
    record = metrics_record(tmp_path / "out")
    record["metrics"]["val/acc"] = 1
    (tmp_path / "out" / "metrics.json").write_text(json.dumps(record))
    shutil.rmtree(tmp_path / "again")
    other = reproduce()
    assert other.returncode == 1
    assert "Not reproduced:" in other.stdout and "'val/acc': 1" in other.stdout
