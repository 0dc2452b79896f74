"""One Optuna study, shared by every sweep process that works on it (`ResumableOptunaSweeper`), and kept
where the jobs find their trials (`this_jobs_trial()`).

- Which trial runs next is decided under a lock beside the storage, so that sweep processes working on one
  study at once run exactly `n_trials` trials between them, each with its own trial number.
- A running trial names the sweep process that runs it, which says every HEARTBEAT_S seconds that it
  still does. The trials of a sweep process that died (killed, logged out, its node lost) are given up:
  marked FAIL and `interrupted`, and put back in the queue with the same parameters.
- A stored study is bound to the settings it was started with, as a checkpoint is.
"""

from __future__ import annotations

import copy
import logging
import os
import socket
import threading
import time
import warnings
from collections.abc import Generator, Sequence
from contextlib import contextmanager, suppress
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

from src.common.errors import UserError
from src.common.targets import instantiates
from src.optuna_sweeper.storage import lock_file, open_storage, storage_file
from src.records.identity import changed_settings

if TYPE_CHECKING:
    import optuna
    from omegaconf import DictConfig
    from optuna.distributions import BaseDistribution
    from optuna.pruners import BasePruner
    from optuna.samplers import BaseSampler
    from optuna.storages import BaseStorage
    from optuna.trial import FrozenTrial, TrialState

__all__ = ["INTERRUPTED", "Next", "SharedStudy", "rerun_trials", "stored_study"]

log = logging.getLogger(__name__)
INTERRUPTED = "interrupted"  # user attribute of a trial that was given up because its sweep process died
SWEEP = "sweep"  # system attribute of a running trial: its sweep process, and when that was last alive
SETTINGS, SEARCH_SPACE = "settings", "search_space"  # system attributes of the study: what it is bound to
HEARTBEAT_S = 10
# A running trial whose sweep process has not been heard of for this long is given up; on the machine
# that ran it, a sweep process that ended is noticed at once. Machines' clocks must agree (NTP).
GRACE_S = 60


class Next(Enum):
    """What `SharedStudy.next_trial()` answers when it starts no trial."""

    WAIT = "wait"  # the study is full, but other sweep processes run some of its trials: they may die
    DONE = "done"  # the study has its `n_trials` trials, and none runs elsewhere


class SharedStudy:
    """The study, with what each sweep process needs to share it: `next_trial()`, `tell()`, `heartbeat()`."""

    def __init__(self, study: optuna.Study, storage: BaseStorage, lock_file: Path | None) -> None:
        from optuna.storages.journal import JournalFileOpenLock

        self.study = study
        self._storage = storage  # the study's, read and written directly where Study has no method for it
        self._study_id = storage.get_study_id_from_name(study.study_name)
        self._thread_lock = threading.Lock()
        # Optuna's lock for journal files: a file created atomically (O_EXCL), also on NFS; one left by a
        # process that died holding it is removed after 30 s.
        self._file_lock = JournalFileOpenLock(str(lock_file)) if lock_file is not None else None
        self._running: set[int] = set()  # the trials (numbers) that this process runs
        self._started_any = False

    @classmethod
    def open(
        cls,
        *,
        storage: str | None,
        cwd: Path,
        name: str | None,
        sampler: BaseSampler,
        pruner: BasePruner,
        directions: list[str],
    ) -> SharedStudy:
        """Create the study, or load it if it exists."""
        import optuna

        # Beside the storage, `<file>.next-trial.lock` exists while a sweep process starts a trial.
        lock = None if storage is None else lock_file(storage, cwd)
        opened = open_storage(storage, cwd)
        study = optuna.create_study(
            storage=opened,
            study_name=name,
            sampler=sampler,
            pruner=pruner,  # the sampler uses it too: TPE compares trials within a Hyperband bracket
            directions=cast(Sequence[Literal["minimize", "maximize"]], directions),
            load_if_exists=True,
        )
        return cls(study, opened, lock)

    def bind(
        self, settings: dict[str, Any], search_space: dict[str, BaseDistribution], directions: list[str], where: str
    ) -> None:
        """Record the settings and the search space of a new study; refuse to continue a stored study with
        other ones, or in other directions. `settings`: the jobs' config, but for the searched parameters."""
        from optuna.distributions import distribution_to_json

        space = {name: distribution_to_json(distribution) for name, distribution in search_space.items()}
        with self._locked():
            stored = self._storage.get_study_system_attrs(self._study_id)
            if SETTINGS not in stored:  # a new study, or one that an earlier version of this sweeper started
                self._storage.set_study_system_attr(self._study_id, SETTINGS, settings)
                self._storage.set_study_system_attr(self._study_id, SEARCH_SPACE, space)
                return
        stored_space: object = stored.get(SEARCH_SPACE)
        if not isinstance(stored[SETTINGS], dict) or not isinstance(stored_space, dict):
            raise UserError(
                f"the study {self.study.study_name} in {where} was not started by this program's sweeper (its record "
                "of the settings has another shape): start a new study with another hydra.sweeper.study_name."
            )
        old_space = cast(dict[str, Any], stored_space)
        changes = changed_settings(stored[SETTINGS], settings)
        changes += [
            f"search space of {name}: {_describe(old_space.get(name))} -> {_describe(space.get(name))}"
            for name in sorted(old_space.keys() | space.keys())
            if old_space.get(name) != space.get(name)
        ]
        # Optuna loads a stored study in its own directions, whatever `create_study` is asked for.
        stored_directions = [direction.name.lower() for direction in self.study.directions]
        if stored_directions != directions:
            changes.append(f"direction: {stored_directions} -> {directions}")
        if changes:
            raise UserError(
                f"the study {self.study.study_name} in {where} was started with other settings "
                f"({'; '.join(changes)}): continue it with those, or start a new study with another "
                "hydra.sweeper.study_name."
            )

    def next_trial(self, n_trials: int) -> optuna.Trial | Next:
        """Start the next trial of the study: one put back in the queue, or a new one while the study has
        fewer than `n_trials` (those given up do not count)."""
        from optuna.trial import TrialState

        with self._locked():
            for trial in self._storage.get_all_trials(self._study_id, deepcopy=False, states=(TrialState.RUNNING,)):
                if trial.number not in self._running and _abandoned(trial):
                    self._give_up(trial)
            trials = [
                trial
                for trial in self._storage.get_all_trials(self._study_id, deepcopy=False)
                if not trial.user_attrs.get(INTERRUPTED)
            ]
            if len(trials) < n_trials or any(trial.state == TrialState.WAITING for trial in trials):
                if not self._started_any and self._storage.get_n_trials(self._study_id) > 0:
                    # A seeded sampler would draw again what the sweep that started the study drew
                    # (or what a sweep running beside this one draws): this process draws afresh.
                    self.study.sampler.reseed_rng()
                self._started_any = True
                trial = self.study.ask()  # the first trial of the queue, if any; else a new one
                self._running.add(trial.number)
                self._storage.set_trial_system_attr(self._id(trial.number), SWEEP, _alive())
                return trial
            elsewhere = [t for t in trials if t.state == TrialState.RUNNING and t.number not in self._running]
            return Next.WAIT if elsewhere else Next.DONE

    def tell(self, trial: optuna.Trial, state: TrialState, values: list[float] | None = None) -> None:
        """Record the result of a trial that this process ran, unless its job has (`StudyTrial`)."""
        from optuna.trial import TrialState

        try:
            recorded = self._storage.get_trial(self._id(trial.number))
            if recorded.state == TrialState.PRUNED:
                log.info(f"Trial {trial.number} pruned at step {recorded.last_step} with value {recorded.value}.")
            if recorded.state.is_finished():
                return
            try:
                self.study.tell(trial, values, state=state, skip_if_finished=True)
            except RuntimeError as error:
                # A GridSampler calls `study.stop()` once its grid is done, which only works within
                # `study.optimize()`; the trial is recorded all the same.
                if "Study.stop" not in str(error):
                    raise
        finally:
            self._running.discard(trial.number)

    def recorded(self, trial: optuna.Trial) -> bool:
        """Whether the study has the trial's result: its job records it as soon as it has it."""
        return self._storage.get_trial(self._id(trial.number)).state.is_finished()

    def progress(self, n_trials: int) -> str:
        """How far the study is, for the log."""
        trials = self.study.get_trials(deepcopy=False)
        finished = sum(trial.state.is_finished() and not trial.user_attrs.get(INTERRUPTED) for trial in trials)
        return f"{finished} of n_trials={n_trials} trials finished"

    def give_up_mine(self) -> None:
        """Give up the trials this process runs: it is stopping, and a new sweep will run them again."""
        from optuna.trial import TrialState

        with self._locked():
            for number in tuple(self._running):
                trial = self._storage.get_trial(self._id(number))
                if trial.state == TrialState.RUNNING:
                    self._give_up(trial)
                self._running.discard(number)

    @contextmanager
    def heartbeat(self) -> Generator[None]:
        """Within this block, a thread says every HEARTBEAT_S seconds that this process runs its trials."""
        from optuna.exceptions import UpdateFinishedTrialError

        stopped = threading.Event()

        def beat() -> None:
            while not stopped.wait(HEARTBEAT_S):
                for number in tuple(self._running):
                    with suppress(UpdateFinishedTrialError):  # its job has just pruned it
                        self._storage.set_trial_system_attr(self._id(number), SWEEP, _alive())

        thread = threading.Thread(target=beat, name="optuna-heartbeat", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stopped.set()
            thread.join()

    def _give_up(self, trial: FrozenTrial) -> None:
        """Mark a running trial FAIL and `interrupted`, and queue a copy with its parameters."""
        from optuna.exceptions import ExperimentalWarning, UpdateFinishedTrialError
        from optuna.storages import RetryHeartbeatStaleTrialCallback
        from optuna.trial import TrialState

        original = copy.deepcopy(trial)  # as it was, without the attribute set below
        try:
            self._storage.set_trial_user_attr(self._id(trial.number), INTERRUPTED, True)
            self._storage.set_trial_state_values(self._id(trial.number), TrialState.FAIL)
        except UpdateFinishedTrialError:  # it has just finished after all
            return
        # Optuna's way of running a trial again (it marks the copy as a retry of the original, and a
        # GridSampler counts the two as one point); experimental since Optuna 2.8, hence a warning.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExperimentalWarning)
            RetryHeartbeatStaleTrialCallback()(self.study, original)
        log.info(f"Trial {trial.number} was interrupted (its sweep stopped): it runs again, with the same parameters.")

    def _id(self, number: int) -> int:
        """The storage's id of the study's trial `number`."""
        return self._storage.get_trial_id_from_study_id_trial_number(self._study_id, number)

    @contextmanager
    def _locked(self) -> Generator[None]:
        with self._thread_lock:
            if self._file_lock is None:
                yield
                return
            self._file_lock.acquire()
            try:
                yield
            finally:
                self._file_lock.release()


def _alive() -> dict[str, Any]:
    """What a running trial records of its sweep process: where it runs, and that it is alive now."""
    return {"host": socket.gethostname(), "pid": os.getpid(), "alive_at": time.time()}


def _abandoned(trial: FrozenTrial) -> bool:
    """Whether a running trial's sweep process has died, as far as this process can tell."""
    recorded: object = trial.system_attrs.get(SWEEP)
    sweep = cast(dict[str, Any], recorded) if isinstance(recorded, dict) else {}
    expected = {"host": str, "pid": int, "alive_at": float}
    if not all(isinstance(sweep.get(key), kind) for key, kind in expected.items()):
        return True  # not started by this sweeper (by the plugin's, say): nobody keeps it alive
    if sweep["host"] == socket.gethostname() and (sweep["pid"] == os.getpid() or not _process_exists(sweep["pid"])):
        return True
    return time.time() - sweep["alive_at"] > GRACE_S


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only checks that the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's
        return True
    return True


def _describe(distribution: str | None) -> str:
    """A stored distribution, as Optuna prints it; `none` for a parameter that was not searched."""
    from optuna.distributions import json_to_distribution

    if distribution is None:
        return "none"
    try:
        return repr(json_to_distribution(distribution))
    except (ValueError, KeyError, TypeError):  # not a distribution that Optuna wrote
        return repr(distribution)


def rerun_trials(study: optuna.Study) -> dict[int, int]:
    """The trials given up when their sweep stopped (`SharedStudy.give_up_mine()`), each with the trial that ran
    it again: Optuna records a retry's history."""
    from optuna.exceptions import ExperimentalWarning
    from optuna.storages import RetryHeartbeatStaleTrialCallback

    with warnings.catch_warnings():  # experimental since Optuna 3.0, as the retry itself (`_give_up()`)
        warnings.simplefilter("ignore", ExperimentalWarning)
        histories = {trial.number: RetryHeartbeatStaleTrialCallback.retry_history(trial) for trial in study.trials}
    return {history[-1]: number for number, history in histories.items() if history}


def stored_study(sweeper: DictConfig) -> optuna.Study | None:
    """The study of an Optuna sweep, as its `hydra.sweeper` config names it; None for other sweepers, for a
    study kept in memory, which ended with its sweep, and for one that the sweep stopped before it made.
    (Hydra calls the callbacks in the directory the sweep ran from, which a relative `storage` is relative to.)"""
    from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper

    if not instantiates(sweeper, OptunaSweeper) or sweeper.storage is None:
        return None
    if not storage_file(sweeper.storage, Path.cwd()).is_file():
        return None  # opening the storage would make the file
    import optuna

    try:
        return optuna.load_study(study_name=sweeper.study_name, storage=open_storage(sweeper.storage, Path.cwd()))
    except KeyError:  # Optuna's "Record does not exist": no study of that name
        return None
