"""Optuna studies end to end (`ResumableOptunaSweeper`): failed, pruned, killed and preempted trials, studies
bound to their settings, sweep processes that share a study; and the shared study's rules in-process."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from contextlib import suppress
from pathlib import Path
from typing import Any

import optuna
import pytest
from omegaconf import OmegaConf
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution
from optuna.trial import FrozenTrial, TrialState

from src.common.errors import UserError
from src.optuna_sweeper.storage import open_storage
from src.optuna_sweeper.study import GRACE_S, INTERRUPTED, SWEEP, Next, SharedStudy
from src.training.checkpoint import CHECKPOINT_FILE
from tests.helpers import (
    IN_JOBS,
    ONE_THREAD,
    PRUNED_STUDY,
    STUDY,
    TINY,
    RunMain,
    assert_pictures,
    fail_job,
    load_study,
    read_csv,
    start_sweep,
    wait_until,
)

PARALLEL = ("hydra/launcher=submitit_local", "hydra.sweeper.n_jobs=2")
TIMEOUT_S = 180


def trial_states(tmp_path: Path) -> Counter[str]:
    """Trials per state; none before the sweep has created the study."""
    if not (tmp_path / "fcn_params.journal").exists():
        return Counter()
    try:
        return Counter(trial.state.name for trial in load_study(tmp_path).trials)
    except KeyError:
        return Counter()


def best_value(sweep_dir: Path) -> float:
    return OmegaConf.load(sweep_dir / "optimization_results.yaml").best_value


def kill_session(process: subprocess.Popen[str]) -> None:
    with suppress(ProcessLookupError):  # it ended already: `wait_until` says why
        os.killpg(process.pid, signal.SIGKILL)  # the sweep and its jobs: as a lost login session or node
    process.communicate(timeout=TIMEOUT_S)


@pytest.mark.slow
def test_study_goes_on_after_a_failed_trial(run_main: RunMain, tmp_path: Path) -> None:
    failing, env, program = fail_job(1, tmp_path)
    trials = ("hydra.sweeper.n_trials=4", "hydra.sweeper.n_jobs=2")
    result = run_main(*STUDY, *trials, *TINY, *failing, "hydra.sweep.dir=sweep", env=env, program=program)

    assert result.returncode == 0, result.stderr
    study = load_study(tmp_path)
    assert [trial.state for trial in study.trials] == [TrialState.COMPLETE, TrialState.FAIL, *[TrialState.COMPLETE] * 2]
    assert best_value(tmp_path / "sweep") == study.best_value
    assert f"Best value: {study.best_value}" in result.stdout
    rows = read_csv(tmp_path / "sweep" / "summary.csv")
    assert [(row["job"], row["status"]) for row in rows][-1] == ("1", "failed")
    assert {"opt.lr", "model.num_hidden", "model.dropout_prob"} <= set(rows[0])  # the sampled parameters
    assert not (tmp_path / "sweep" / "summary_by_config.csv").exists()  # each configuration ran once
    # Trials report their accuracy after each epoch: a picture shows it. Trials this tiny may all score the same
    # (their order of sampling depends on which slot frees first): the log then says why importances are not drawn.
    alike = "No parameter importances: the completed trials score too much alike" in result.stdout
    drawn = ["optimization_history", *([] if alike else ["param_importances"]), "intermediate_values"]
    assert_pictures(result.stdout, tmp_path, "sweep", drawn)
    # Optuna's own command line reads the study.
    optuna_cli = Path(sys.executable).parent / "optuna"
    listed = subprocess.run(
        [optuna_cli, "trials", "--storage", "fcn_params.journal", "--study-name", "fcn_params", "-f", "json"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    assert [trial["state"] for trial in json.loads(listed.stdout)] == ["COMPLETE", "FAIL", "COMPLETE", "COMPLETE"]


@pytest.mark.slow
def test_study_beats_the_default_configuration(run_main: RunMain, tmp_path: Path) -> None:
    default = run_main("hydra.run.dir=default")
    assert default.returncode == 0, default.stderr
    default_acc = json.loads((tmp_path / "default" / "metrics.json").read_text())["metrics"]["val/acc"]

    # A seeded sampler, so that the test does not depend on luck; on this small data set, three trials
    # (all sampled at random: TPE starts with random trials) find a better configuration than the default.
    result = run_main(*STUDY, "hydra.sweeper.n_trials=3", "hydra.sweeper.sampler.seed=0", "hydra.sweep.dir=sweep")

    assert result.returncode == 0, result.stderr
    assert best_value(tmp_path / "sweep") > default_acc


@pytest.mark.slow
def test_a_killed_study_keeps_every_result_and_runs_its_interrupted_trials_again(
    run_main: RunMain, mnist_root: Path, tmp_path: Path
) -> None:
    command = (*STUDY, *PARALLEL, "hydra.sweeper.n_trials=4", *TINY)
    first = start_sweep(mnist_root, tmp_path, *command, "hydra.sweep.dir=first")
    try:
        # Kill it once a trial is done and both slots run trials again: each trial is recorded as its job
        # ends, not with its batch. (Once their jobs train, not while the study is written: a process
        # killed then leaves Optuna's lock on the journal, which the next sweep takes over after 30 s.)
        def training_again() -> bool:
            if not (tmp_path / "fcn_params.journal").exists():
                return False
            trials = load_study(tmp_path).trials if trial_states(tmp_path) else []
            running = [trial.number for trial in trials if trial.state == TrialState.RUNNING]
            return (
                any(trial.state == TrialState.COMPLETE for trial in trials)
                and len(running) == 2
                and all((tmp_path / "first" / str(n) / ".hydra" / "overrides.yaml").exists() for n in running)
            )

        wait_until(training_again, first, "a finished trial")
    finally:
        kill_session(first)
    before = load_study(tmp_path).trials
    # No finished job is lost: each one that wrote its result is in the study.
    for job in (tmp_path / "first").glob("[0-9]*/metrics.json"):
        assert before[int(job.parent.name)].state == TrialState.COMPLETE, job

    # A new sweep directory, as the default, timestamped one would be.
    result = run_main(*command, "hydra.sweep.dir=second", env=ONE_THREAD | IN_JOBS)

    assert result.returncode == 0, result.stderr
    trials = load_study(tmp_path).trials
    for trial in before:
        if trial.state == TrialState.COMPLETE:
            assert trials[trial.number].state == TrialState.COMPLETE  # kept, not run again
        else:  # interrupted: run again, with the same parameters, as a new trial
            (again,) = [t for t in trials if t.system_attrs.get("failed_trial") == trial.number]
            assert trials[trial.number].state == TrialState.FAIL
            assert trials[trial.number].user_attrs[INTERRUPTED]
            # Its parameters, and the others drawn anew if it was killed while they were drawn.
            assert trial.params.items() <= again.params.items()
            assert again.state == TrialState.COMPLETE
            assert f"Trial {trial.number} was interrupted (its sweep stopped)" in result.stdout
    assert Counter(t.state for t in trials if not t.user_attrs.get(INTERRUPTED)) == {TrialState.COMPLETE: 4}
    # The second sweep ran the others, in job directories numbered like their trials.
    rows = read_csv(tmp_path / "second" / "summary.csv")
    assert sorted(int(row["job"]) for row in rows) == list(range(len(before), len(trials)))
    assert best_value(tmp_path / "second") == load_study(tmp_path).best_value


@pytest.mark.slow
def test_a_killed_grid_study_evaluates_each_point_once(run_main: RunMain, mnist_root: Path, tmp_path: Path) -> None:
    # Eight points; `params=null` leaves only the command line's search space.
    grid = ("model.num_hidden=choice(1,2)", "model.dropout_prob=choice(0.0,0.1)", "opt.lr=choice(0.001,0.0003)")
    command = (*STUDY, "hydra/sweeper/sampler=grid", "hydra.sweeper.params=null", *grid, *TINY)
    first = start_sweep(mnist_root, tmp_path, *command, "hydra.sweep.dir=first")
    try:
        # Within job 3 (killed while it trains: see the previous test).
        wait_until((tmp_path / "first" / "3" / ".hydra" / "overrides.yaml").exists, first, "job 3")
    finally:
        kill_session(first)

    result = run_main(*command, "hydra.sweep.dir=second", env=ONE_THREAD | IN_JOBS)

    assert result.returncode == 0, result.stderr
    counted = [trial for trial in load_study(tmp_path).trials if not trial.user_attrs.get(INTERRUPTED)]
    assert [trial.state for trial in counted] == [TrialState.COMPLETE] * 8
    assert len({tuple(sorted(trial.params.items())) for trial in counted}) == 8

    # More trials than the grid has points: the study is complete, and the command only reports.
    trials = len(load_study(tmp_path).trials)
    again = run_main(*command, "hydra.sweeper.n_trials=20", "hydra.sweep.dir=third", env=ONE_THREAD | IN_JOBS)

    assert again.returncode == 0, again.stderr
    assert len(load_study(tmp_path).trials) == trials
    assert not list((tmp_path / "third").glob("[0-9]*"))
    assert best_value(tmp_path / "third") == load_study(tmp_path).best_value


@pytest.mark.slow
def test_a_stored_study_is_only_continued_with_its_own_settings(run_main: RunMain, tmp_path: Path) -> None:
    first = run_main(*STUDY, "hydra.sweeper.n_trials=1", "opt.epochs=1", "model.hidden_dim=32", "hydra.sweep.dir=a")
    assert first.returncode == 0, first.stderr

    other = run_main(*STUDY, "hydra.sweeper.n_trials=2", "opt.epochs=1", "model.hidden_dim=8", "hydra.sweep.dir=b")

    assert other.returncode == 1
    assert other.stderr.strip().splitlines()[-1] == (
        "Error: the study fcn_params in fcn_params.journal was started with other settings (model.hidden_dim: "
        "32 -> 8): continue it with those, or start a new study with another hydra.sweeper.study_name."
    )
    assert "Traceback" not in other.stderr
    assert len(load_study(tmp_path).trials) == 1
    assert not (tmp_path / "b" / "optimization_results.yaml").exists()


# A median pruner that judges from the second trial on; with this sampler seed, on the small MNIST, trial 0
# completes, trial 1 is pruned at epoch 2 and trial 2 at epoch 1. Epochs of about a second: time to
# preempt trial 1 within its second epoch.


@pytest.fixture(scope="module")
def pruned_study(mnist_root: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[FrozenTrial]]:
    """The directory of PRUNED_STUDY run by the basic launcher, undisturbed, and its trials."""
    cwd = tmp_path_factory.mktemp("pruned")
    process = start_sweep(mnist_root, cwd, *PRUNED_STUDY)
    output, _ = process.communicate(timeout=TIMEOUT_S)
    assert process.returncode == 0, output
    return cwd, load_study(cwd).trials


@pytest.mark.slow
def test_a_trial_reports_each_epoch_and_stops_when_pruned(pruned_study: tuple[Path, list[FrozenTrial]]) -> None:
    cwd, trials = pruned_study
    assert [trial.state for trial in trials] == [TrialState.COMPLETE, TrialState.PRUNED, TrialState.PRUNED]
    rows = {row["job"]: row for row in read_csv(cwd / "sweep" / "summary.csv")}
    for trial in trials:
        record = json.loads((cwd / "sweep" / str(trial.number) / "metrics.json").read_text())
        # Every epoch it trained is reported, as step n; its value is its last epoch's accuracy.
        assert list(trial.intermediate_values) == list(range(1, record["epoch"] + 1))
        assert trial.value == trial.intermediate_values[record["epoch"]] == record["metrics"]["val/acc"]
        if trial.state == TrialState.PRUNED:
            assert record["status"] == "pruned"
            assert record["epoch"] < 3
            assert "test/acc" not in record["metrics"]  # a pruned trial stops: no test
            assert rows[str(trial.number)]["status"] == f"pruned at epoch {record['epoch']}"
        else:
            assert (record["status"], record["epoch"]) == ("finished", 3)


@pytest.mark.slow
def test_a_preempted_trial_continues_and_is_judged_as_if_left_alone(
    pruned_study: tuple[Path, list[FrozenTrial]], mnist_root: Path, tmp_path: Path
) -> None:
    # The same study, to trial 1, each trial in a process of its own (as SLURM jobs are).
    process = start_sweep(
        mnist_root, tmp_path, *PRUNED_STUDY, "hydra.sweeper.n_trials=2", "hydra/launcher=submitit_local"
    )
    wait_until((tmp_path / "sweep" / "1" / CHECKPOINT_FILE).exists, process, "trial 1's first epoch")
    # SLURM's warning of a preemption, which submitit's local jobs understand too: the job stops after
    # the current step, saves, and submitit starts it again, in its own directory, as the same trial.
    tasks = subprocess.run(
        ["pgrep", "-f", f"submitit.core._submit {tmp_path}"], capture_output=True, text=True, check=True
    ).stdout.split()
    (task,) = tasks  # job 1's: the sweep runs one trial at a time
    os.kill(int(task), signal.SIGUSR2)
    output, _ = process.communicate(timeout=TIMEOUT_S)
    assert process.returncode == 0, output

    logs = [path.read_text() for path in (tmp_path / "sweep" / ".submitit").glob("*/*_log.out")]
    assert "Requeued job" in "".join(logs)
    assert "Continuing from sweep/1/checkpoint.pt: 1 epoch and" in "".join(logs)
    assert "already reported" not in "".join(logs)  # no epoch reported twice
    assert all("Job completed successfully" in log for log in logs)  # pruned trials are no failed jobs
    left_alone = pruned_study[1][:2]
    assert [(t.state, t.value, t.intermediate_values) for t in load_study(tmp_path).trials] == [
        (t.state, t.value, t.intermediate_values) for t in left_alone
    ]


@pytest.mark.slow
def test_sweep_processes_share_a_study(mnist_root: Path, tmp_path: Path) -> None:
    command = (*STUDY, "hydra.sweeper.n_trials=5", *TINY, "hydra.sweep.dir=sweep")
    # Started at the same moment, on the same study and the same sweep directory.
    processes = [start_sweep(mnist_root, tmp_path, *command) for _ in range(2)]
    outputs = [process.communicate(timeout=TIMEOUT_S)[0] for process in processes]
    assert [process.returncode for process in processes] == [0, 0], outputs

    trials = load_study(tmp_path).trials
    assert [(trial.number, trial.state) for trial in trials] == [(n, TrialState.COMPLETE) for n in range(5)]
    for trial in trials:  # one job directory per trial, holding that trial's job
        overrides = OmegaConf.load(tmp_path / "sweep" / str(trial.number) / ".hydra" / "overrides.yaml")
        assert f"opt.lr={trial.params['opt.lr']}" in overrides
    assert all(f"Best value: {load_study(tmp_path).best_value}" in output for output in outputs)


@pytest.mark.slow
def test_a_grid_multirun_has_no_trial_and_imports_no_optuna(mnist_root: Path, tmp_path: Path) -> None:
    importtime = {"PYTHONPROFILEIMPORTTIME": "1"}  # one line per imported module: "import time: ... | name"
    process = start_sweep(mnist_root, tmp_path, "--multirun", "seed=1,2", *TINY, env=importtime)
    output, _ = process.communicate(timeout=TIMEOUT_S)
    assert process.returncode == 0, output
    imported = {line.rsplit("|", 1)[-1].strip() for line in output.splitlines() if "import time:" in line}
    assert "torch" in imported
    assert not {name for name in imported if name.split(".")[0] == "optuna"}


# In-process: the rules of a shared study, on a real journal file.


def shared_study(tmp_path: Path, directions: tuple[str, ...] = ("maximize",)) -> SharedStudy:
    return SharedStudy.open(
        storage="study.journal",
        cwd=tmp_path,
        name="study",
        sampler=optuna.samplers.RandomSampler(seed=0),
        pruner=optuna.pruners.NopPruner(),
        directions=list(directions),
    )


SPACE: dict[str, BaseDistribution] = {
    "opt.lr": FloatDistribution(1e-5, 1e-3, log=True),
    "model.num_hidden": CategoricalDistribution([1, 2]),
}
SETTINGS = {"seed": 42, "gpu": 0, "model": {"hidden_dim": 32, "num_hidden": 1}, "opt": {"lr": 1e-3}}


def test_a_study_is_bound_to_its_settings_search_space_and_direction(tmp_path: Path) -> None:
    shared_study(tmp_path).bind(SETTINGS, SPACE, ["maximize"], where="study.journal")
    # What may change: the searched parameters' values, where it runs (`gpu`).
    shared_study(tmp_path).bind(SETTINGS | {"gpu": 1}, SPACE, ["maximize"], where="study.journal")

    other_space = SPACE | {"opt.lr": FloatDistribution(1e-4, 1e-2, log=True)}
    with pytest.raises(UserError) as error:
        shared_study(tmp_path).bind(SETTINGS | {"seed": 1}, other_space, ["maximize"], where="study.journal")
    assert str(error.value) == (
        "the study study in study.journal was started with other settings (seed: 42 -> 1; search space of opt.lr: "
        "FloatDistribution(high=0.001, log=True, low=1e-05, step=None) -> FloatDistribution(high=0.01, log=True, "
        "low=0.0001, step=None)): continue it with those, or start a new study with another hydra.sweeper.study_name."
    )
    with pytest.raises(UserError, match=r"\(direction: \['maximize'\] -> \['minimize'\]\)"):
        shared_study(tmp_path, ("minimize",)).bind(SETTINGS, SPACE, ["minimize"], where="study.journal")


def running_trial(study: SharedStudy, sweep: dict[str, Any], tmp_path: Path) -> int:
    """A trial with sampled parameters, left running by the sweep process `sweep` describes."""
    trial = study.study.ask()
    trial.suggest_float("opt.lr", 1e-5, 1e-3, log=True)
    storage = open_storage("study.journal", tmp_path)
    trial_id = storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name("study"), trial.number)
    storage.set_trial_system_attr(trial_id, SWEEP, sweep)
    return trial.number


def test_the_trials_of_a_dead_sweep_run_again_with_their_parameters(tmp_path: Path) -> None:
    study = shared_study(tmp_path)
    # A sweep process on this machine that has ended (no process has this pid: it is above Linux's
    # limit), and one elsewhere not heard of for longer than the grace period: both dead. One elsewhere
    # heard of just now: alive.
    dead_here = running_trial(
        study, {"host": socket.gethostname(), "pid": 2**31 - 1, "alive_at": time.time()}, tmp_path
    )
    dead_elsewhere = running_trial(
        study, {"host": "elsewhere", "pid": 1, "alive_at": time.time() - GRACE_S - 1}, tmp_path
    )
    alive_elsewhere = running_trial(study, {"host": "elsewhere", "pid": 1, "alive_at": time.time()}, tmp_path)

    first, second = study.next_trial(n_trials=3), study.next_trial(n_trials=3)

    trials = study.study.trials
    assert [trials[n].state for n in (dead_here, dead_elsewhere, alive_elsewhere)] == [
        TrialState.FAIL,
        TrialState.FAIL,
        TrialState.RUNNING,
    ]
    assert isinstance(first, optuna.Trial) and isinstance(second, optuna.Trial)
    # The queued copies, with the dead trials' parameters; the study is full: three trials that count.
    assert [first.params, second.params] == [trials[dead_here].params, trials[dead_elsewhere].params]
    for trial in (first, second):
        study.tell(trial, TrialState.COMPLETE, [0.5])
    assert study.next_trial(n_trials=3) is Next.WAIT  # for the trial that runs elsewhere
    study.study.tell(alive_elsewhere, 0.7)
    assert study.next_trial(n_trials=3) is Next.DONE
