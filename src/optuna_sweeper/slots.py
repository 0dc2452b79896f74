"""Running a study's trials in slots: each slot starts the next trial as soon as its own has its result."""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from hydra.core.utils import JobReturn
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import BaseSubmititLauncher

from src.optuna_sweeper.study import HEARTBEAT_S, Next, SharedStudy

if TYPE_CHECKING:
    import optuna
    from hydra.plugins.launcher import Launcher

__all__ = ["Trials"]

log = logging.getLogger(__name__)
RESULT_POLL_S = 0.5  # how often a slot looks in the study for the result of its trial's job


@dataclass(eq=False)
class Trials:
    """Runs the study's trials in slots, each starting the next trial as soon as its own has its result.

    With a launcher that runs each job in a process of its own (submitit's, locally or on SLURM), a slot is
    a thread that launches one trial after another, and is free as soon as the job has recorded its result
    in the study (`StudyTrial`), while the job's process still ends. The basic launcher runs the job
    in this process: one trial at a time, in this thread, the only one that gets signals (Ctrl-C)."""

    study: SharedStudy
    launcher: Launcher
    overrides: Callable[[optuna.Trial], Sequence[str]]  # the overrides of a trial's job
    n_trials: int
    max_failure_rate: float  # the share of jobs that may fail (raise) before the sweep stops
    n_objectives: int
    told: int = 0
    failed: list[JobReturn] = field(default_factory=list[JobReturn])
    error: BaseException | None = None  # what stopped a slot
    waiting_logged: bool = False
    _jobs: list[threading.Thread] = field(default_factory=list[threading.Thread])  # trials launched by slots
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def run(self, slots: int) -> None:
        if not isinstance(self.launcher, BaseSubmititLauncher):
            self._slot(self._run)
        else:
            threads = [
                threading.Thread(target=self._catching, args=(self._slot, self._start), name=f"slot {n}", daemon=True)
                for n in range(slots)
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            for job in self._jobs:  # the last jobs still end: their results, their files for the summary
                job.join()
            if self.error is not None:
                raise self.error
        if self._too_many_failures():
            log.error(
                f"{len(self.failed)} of the {self.told} trials run failed, more than "
                f"max_failure_rate={self.max_failure_rate}."
            )
            _ = self.failed[-1].return_value  # raises the job's error, with its traceback

    def _slot(self, run: Callable[[optuna.Trial], None]) -> None:
        while self.error is None and not self._too_many_failures():
            trial = self.study.next_trial(self.n_trials)
            if trial is Next.DONE:
                return
            if trial is Next.WAIT:
                self._log_waiting()
                time.sleep(HEARTBEAT_S)
                continue
            run(trial)

    def _start(self, trial: optuna.Trial) -> None:
        """Launch the trial in a thread of its own; return once the study has its result."""
        job = threading.Thread(
            target=self._catching, args=(self._run, trial), name=f"trial {trial.number}", daemon=True
        )
        with self._lock:
            self._jobs.append(job)
        job.start()
        while job.is_alive() and not self.study.recorded(trial):
            job.join(RESULT_POLL_S)

    def _catching(self, function: Callable[[Any], None], argument: Any) -> None:
        """`function(argument)` in a thread: what it raises stops the slots, and the sweep raises it."""
        try:
            function(argument)
        except BaseException as error:
            self.error = self.error or error

    def _run(self, trial: optuna.Trial) -> None:
        from optuna.trial import TrialState

        try:
            (job,) = self.launcher.launch([self.overrides(trial)], initial_job_idx=trial.number)
        except Exception:  # a job that ended without a result (killed, lost), or a wrong search space
            self.study.tell(trial, TrialState.FAIL)
            raise
        # Anything else (Ctrl-C, a job that exits) leaves the trial running: `give_up_mine()` puts it back.
        try:
            value = job.return_value
        except Exception as error:  # the job raised
            self.study.tell(trial, TrialState.FAIL)
            log.warning(f"Trial {trial.number} failed: {error}")
            with self._lock:
                self.told += 1
                self.failed.append(job)
            return
        try:
            values = _objectives(value, self.n_objectives)
        except ValueError as error:
            self.study.tell(trial, TrialState.FAIL)
            log.warning(f"Trial {trial.number} failed: {error}")
        else:
            self.study.tell(trial, TrialState.COMPLETE, values)
        with self._lock:
            self.told += 1

    def _too_many_failures(self) -> bool:
        with self._lock:
            return bool(self.failed) and len(self.failed) / self.told > self.max_failure_rate

    def _log_waiting(self) -> None:
        with self._lock:
            if self.waiting_logged:
                return
            self.waiting_logged = True
        log.info("All trials of the study have started; waiting for those that other sweep processes run.")


def _objectives(value: Any, n_objectives: int) -> list[float]:
    """The job's return value as the study's objective values; ValueError if it is not one."""
    try:
        values = [float(value)] if n_objectives == 1 else [float(item) for item in value]
    except (TypeError, ValueError):
        raise ValueError(f"the job returned {value!r}, not {n_objectives} number(s).") from None
    if len(values) != n_objectives:
        raise ValueError(f"the job returned {len(values)} values for {n_objectives} objectives.")
    if any(math.isnan(value) for value in values):
        raise ValueError(f"the job returned {value!r}: NaN is no result.")
    return values
