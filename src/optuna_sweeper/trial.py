"""A job's side of an Optuna study: it reports its validation accuracy after each epoch to its trial, and
stops when the study's pruner says so.

A job of our Optuna sweeper (`ResumableOptunaSweeper`) is trial `hydra.job.num` of the study
`hydra.sweeper.study_name` in `hydra.sweeper.storage`: it finds the trial there from its own config, so
that nothing but the config travels with the job (to a SLURM node, say), and it finds it again when it is
continued after an interruption. Plain runs and grid multiruns have no trial, and import no Optuna.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode

from src.common.errors import SweepError, UserError
from src.common.targets import instantiates
from src.optuna_sweeper.storage import lock_file
from src.records.identity import bind_data
from src.records.metrics import METRIC

if TYPE_CHECKING:
    import optuna
    from optuna.storages import BaseStorage


__all__ = ["StudyTrial", "this_jobs_trial"]

log = logging.getLogger(__name__)
DATA = "data"  # system attribute of the study: the data its trials ran on, by their data settings


class StudyTrial:
    """The trial that this job runs."""

    def __init__(self, trial: optuna.Trial, reported: set[int], pruned: bool) -> None:
        self._trial = trial
        self._reported = reported  # the epochs whose accuracy the trial has: those before an interruption too
        self.pruned = pruned

    def report(self, history: list[dict[str, float]]) -> None:
        """Report the validation accuracy of each epoch in `history` that the trial lacks (epoch n is step n),
        then ask the study's pruner whether to go on; if not, record the trial as PRUNED, and set `pruned`.

        Called after each epoch, and when training continues from a checkpoint, for the epochs that the
        stopped run saved but did not report. Epochs reported before an interruption are not reported, nor
        judged, again: the pruner's decision does not depend on where the run was stopped."""
        from optuna.exceptions import UpdateFinishedTrialError
        from optuna.trial import TrialState

        new = [epoch for epoch in range(1, len(history) + 1) if epoch not in self._reported]
        for epoch in new:
            try:
                self._trial.report(history[epoch - 1][METRIC], step=epoch)
            except UpdateFinishedTrialError:
                raise UserError(
                    f"trial {self._trial.number} of the study {self._trial.study.study_name} was given up: its sweep "
                    "stopped, and the study runs it again as a new trial. This job stops."
                ) from None
            self._reported.add(epoch)
        if new and self._trial.should_prune():
            # Recorded here, not by the sweeper: the decision stands even if this job is stopped now.
            self._trial.study.tell(self._trial, state=TrialState.PRUNED)
            self.pruned = True
            log.info(f"Pruned at epoch {new[-1]}: the study's pruner stops this trial ({METRIC} falls behind).")

    def complete(self, value: float) -> None:
        """Record the trial's result: as soon as the job has it, even if the sweep that waits for it has died."""
        self._trial.study.tell(self._trial, value, skip_if_finished=True)


def this_jobs_trial(history: list[dict[str, float]], identity: dict[str, dict[str, Any]]) -> StudyTrial | None:
    """The trial of this job, if it is one of our Optuna sweeper's in a stored study, and still runs or was
    pruned; None otherwise (its sweep gave it up, or an `--experimental-rerun` reruns a finished trial).
    A job that continues from a checkpoint reports the epochs of `history` that its trial lacks. The study is
    bound to its data (`identity`: what the job's results belong to), as it is bound to its settings, and the
    trial records its data and code (user attributes)."""
    if not HydraConfig.initialized():  # `run()` called as a library
        return None
    hydra = HydraConfig.get()
    sweeper = hydra.sweeper
    from src.optuna_sweeper.sweeper import ResumableOptunaSweeper

    if hydra.mode != RunMode.MULTIRUN or not instantiates(sweeper, ResumableOptunaSweeper) or sweeper.storage is None:
        return None
    import optuna
    from hydra.utils import instantiate
    from optuna.trial import TrialState

    from src.optuna_sweeper.config import PRUNER_TARGETS
    from src.optuna_sweeper.storage import open_storage

    cwd = Path(hydra.runtime.cwd)
    storage = open_storage(sweeper.storage, cwd)
    pruner = instantiate(sweeper.pruner, _execution_whitelist_=PRUNER_TARGETS)
    # The sweeper samples the parameters; the job's study only judges, so its sampler does nothing.
    study = optuna.load_study(
        study_name=sweeper.study_name, storage=storage, pruner=pruner, sampler=optuna.samplers.RandomSampler()
    )
    study_id = storage.get_study_id_from_name(study.study_name)
    _bind_to_data(storage, study_id, identity["data"], where=f"{sweeper.storage}", lock=lock_file(sweeper.storage, cwd))
    trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, hydra.job.num)
    trial = storage.get_trial(trial_id)
    if trial.state not in (TrialState.RUNNING, TrialState.PRUNED):
        log.info(f"Trial {trial.number} of the study {study.study_name} is {trial.state.name}: not reporting to it.")
        return None
    if trial.state == TrialState.RUNNING:
        for name, value in identity.items():
            storage.set_trial_user_attr(trial_id, name, value)
    this_trial = StudyTrial(
        optuna.Trial(study, trial_id), set(trial.intermediate_values), pruned=trial.state == TrialState.PRUNED
    )
    if not this_trial.pruned:
        this_trial.report(history)
    return this_trial


def _bind_to_data(storage: BaseStorage, study_id: int, data: dict[str, str], *, where: str, lock: Path) -> None:
    """Tie the stored study to the data its trials run on, by their data settings (`bind_data()`): a
    study continued on other data is refused, as a sweep is."""
    from optuna.storages.journal import JournalFileOpenLock

    file_lock = JournalFileOpenLock(str(lock))
    file_lock.acquire()  # sweep processes and jobs that share the study take turns
    try:
        bound: dict[str, dict[str, str]] = storage.get_study_system_attrs(study_id).get(DATA, {})
        overrides = list(HydraConfig.get().overrides.task)
        conflict = bind_data(bound, data, overrides, run="trial", whole="study")
        if conflict is not None:
            raise SweepError(
                f"the study in {where} {conflict}, or start a new study with another hydra.sweeper.study_name."
            )
        storage.set_study_system_attr(study_id, DATA, bound)
    finally:
        file_lock.release()
