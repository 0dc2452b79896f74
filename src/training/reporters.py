"""Where a run reports beyond its output directory, epoch by epoch: the console, its W&B run (where W&B is
on), and its Optuna trial (where the run is one), whose pruner may stop it.

Rank 0's alone: one W&B run and one trial, however many processes train the run; the pruner's word is
agreed by all of them, so that they stop together.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from src.records.metrics import INTERRUPTED, PRUNED, RunResult

if TYPE_CHECKING:
    from wandb.sdk.wandb_run import Run

    from src.optuna_sweeper.trial import StudyTrial
    from src.training.checkpoint import Checkpoint
    from src.training.distributed import World
    from src.training.loop import Metrics, TrainingState
    from src.wandb_logging import WandbCfg

__all__ = ["Reporters"]

log = logging.getLogger(__name__)
EXIT_CODES = {INTERRUPTED: 130, None: 1}  # what W&B records of a run that was stopped, or that raised


class Reporters:
    """The console, W&B and the Optuna trial, told of each epoch (when the checkpoint is saved too) and of the
    end of the run."""

    def __init__(
        self, *, epochs: int, checkpoint: Checkpoint, trial: StudyTrial | None, wandb_run: Run | None, world: World
    ) -> None:
        self.epochs, self.checkpoint, self.world = epochs, checkpoint, world
        self.trial, self.wandb_run = trial, wandb_run
        self._pruned: bool | None = None  # agreed by the processes once they have joined (see `pruned`)

    @classmethod
    def start(
        cls,
        wandb: WandbCfg,
        logged_config: dict[str, Any],
        state: TrainingState,
        *,
        epochs: int,
        checkpoint: Checkpoint,
        world: World,
    ) -> Reporters:
        """Find the run's trial, if it is one, and start (or continue) its W&B run, if W&B is on; each records
        what the results belong to, the data and the code that the checkpoint is bound to."""
        if not world.is_main:
            return cls(epochs=epochs, checkpoint=checkpoint, trial=None, wandb_run=None, world=world)
        from src.optuna_sweeper.trial import this_jobs_trial

        identity = {"data": checkpoint.data, "code": checkpoint.code[-1]}
        # None unless this run is a trial of an Optuna study; a trial that continues reports the epochs that
        # its stopped run saved but did not report.
        trial = this_jobs_trial(state.history, identity)
        wandb_run = wandb.build(logged_config | identity, resume_id=checkpoint.wandb_id)
        if wandb_run is not None:
            checkpoint.wandb_id = wandb_run.id
        return cls(epochs=epochs, checkpoint=checkpoint, trial=trial, wandb_run=wandb_run, world=world)

    def end_epoch(self, state: TrainingState) -> None:
        """Report the epoch just completed, and save the checkpoint (every process calls this)."""
        log.info(f"Epoch {state.epoch}/{self.epochs}: {headline(state.history[-1], 'val')}")
        if self.wandb_run is not None:
            self.wandb_run.log(state.history[-1] | {"epoch": state.epoch})
        self.checkpoint.save(state)
        if self.trial is not None:  # after saving: a pruned trial's checkpoint holds its last epoch
            self.trial.report(state.history)
        self._pruned = self._agree_on_pruning()

    def end_test(self, metrics: Metrics) -> None:
        log.info(f"Test: {headline(metrics, 'test')}")
        if self.wandb_run is not None:
            self.wandb_run.log(metrics)

    def end(self, result: RunResult | None) -> None:
        """End the W&B run, and complete the trial with the run's result; `result` None: the run raised."""
        status = None if result is None else result.status
        if self.wandb_run is not None:
            self.wandb_run.finish(exit_code=EXIT_CODES.get(status, 0))
        if self.trial is not None and result is not None and status not in (INTERRUPTED, PRUNED):
            self.trial.complete(result.value)  # in the study now, whatever happens to the sweep

    @property
    def pruned(self) -> bool:
        """Whether the study's pruner stopped the trial (a trial continued after its pruning, too). Every process
        asks at the same points of training: the first time, they agree on it."""
        if self._pruned is None:
            self._pruned = self._agree_on_pruning()
        return self._pruned

    def _agree_on_pruning(self) -> bool:
        """Whether the study's pruner stopped the trial: rank 0 alone reports to it, and tells the others."""
        return self.world.max(self.trial is not None and self.trial.pruned) == 1


def headline(metrics: Metrics, prefix: str) -> str:
    """The headline metrics of one split, for the console."""
    names = (f"{prefix}/acc", f"{prefix}/worst_group_acc", f"{prefix}/loss")
    return " ".join(f"{name}={metrics[name]:.4f}" for name in names)
