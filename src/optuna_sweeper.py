"""The Optuna sweeper, extended to continue an interrupted study when the same command runs again.

With a stored study (`storage` and `study_name` set), the plugin's sweeper loads the study and
then runs `n_trials` *more* trials; and the trials that a killed sweep was running stay RUNNING
for ever. Here `n_trials` is the size of the whole study instead: the trials already finished
count towards it, so that a killed sweep, run again, ends as if it had never stopped, and a
finished one, run again, only reports its best trial.
"""

from __future__ import annotations

import logging
from pathlib import Path

from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper
from typing_extensions import override

__all__ = ["INTERRUPTED", "ResumableOptunaSweeper"]

log = logging.getLogger(__name__)
INTERRUPTED = "interrupted"  # user attribute of the trials that a killed sweep left RUNNING


class ResumableOptunaSweeper(OptunaSweeper):
    """Count the finished trials of a stored study towards `n_trials`.

    Finished trials are those that completed or failed. Trials left RUNNING by a sweep that died
    are marked FAIL (as Optuna's own heartbeat does with stale trials) and `interrupted`, and do
    not count: their configurations were never evaluated. This assumes that one sweep at a time
    works on a study, which is how the plugin is used: parallelism comes from the launcher.
    """

    @override
    def sweep(self, arguments: list[str]) -> None:
        plugin = self.sweeper  # the plugin's implementation, which holds the settings
        if plugin.storage is not None and plugin.study_name is not None:
            finished, trials = _finish_interrupted_trials(plugin.storage, plugin.study_name)
            remaining = max(plugin.n_trials - finished, 0)
            if trials:
                log.info(
                    f"Continuing study {plugin.study_name} in {plugin.storage}: {finished} of its "
                    f"n_trials={plugin.n_trials} trials are finished; running the remaining {remaining}."
                )
            plugin.n_trials = remaining
            # Number the jobs after the trials: job directory N holds trial N, and a fixed
            # `hydra.sweep.dir` is added to rather than overwritten.
            plugin.job_idx = trials
            # The plugin writes optimization_results.yaml there; with no trial to run, no launcher creates it.
            Path(plugin.sweep_dir).mkdir(parents=True, exist_ok=True)
        super().sweep(arguments)


def _finish_interrupted_trials(storage_url: str, study_name: str) -> tuple[int, int]:
    """Mark the study's RUNNING trials as interrupted failures; return its finished and all trials."""
    import optuna  # here, not at the top: main.py imports this module for every run, even `--help`
    from optuna.trial import TrialState

    storage = optuna.storages.RDBStorage(storage_url)
    try:
        study_id = storage.get_study_id_from_name(study_name)
    except KeyError:
        return 0, 0  # a new study: the plugin creates it
    for trial in storage.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,)):
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
        storage.set_trial_user_attr(trial_id, INTERRUPTED, True)
        storage.set_trial_state_values(trial_id, TrialState.FAIL)
        log.info(f"Trial {trial.number} of study {study_name} was interrupted: marked FAIL, not counted.")
    trials = storage.get_all_trials(study_id, deepcopy=False)
    finished = sum(trial.state.is_finished() and not trial.user_attrs.get(INTERRUPTED) for trial in trials)
    return finished, len(trials)
