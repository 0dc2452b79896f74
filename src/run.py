"""The top-level `Config`, its registration with Hydra, and `run()`, which trains and evaluates."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig

from src.celeba import CelebADataModule
from src.cmnist import CMNISTDataModule
from src.data import Data, DataModule, check_seed
from src.errors import UserError
from src.model import FcnFactory, ModelFactory, SimpleCNNFactory
from src.optimisation import OptimisationCfg
from src.optuna_config import register_sweeper_configs
from src.paths import shown
from src.validation import checked_config
from src.wandb_logging import WandbCfg

if TYPE_CHECKING:
    from wandb.sdk.wandb_run import Run

    from src.checkpoint import Checkpoint
    from src.distributed import World
    from src.optuna_trial import StudyTrial
    from src.stopping import StopRequest
    from src.training import Metrics, TrainingState

__all__ = ["Config", "register_configs", "run"]

log = logging.getLogger(__name__)
METRICS_FILE = "metrics.json"


@dataclass(eq=False, kw_only=True)
class Config:
    """The schema of the whole configuration: Hydra checks every value and override against it."""

    # MISSING: chosen by the `defaults` list in conf/config.yaml, or on the command line.
    dm: DataModule = MISSING
    model: ModelFactory = MISSING
    opt: OptimisationCfg = field(default_factory=OptimisationCfg)
    wandb: WandbCfg = field(default_factory=WandbCfg)
    seed: int = 42
    gpu: int = 0  # CUDA device index; -1 for the CPU

    def __post_init__(self) -> None:
        check_seed("seed", self.seed)
        if self.gpu < -1:
            raise UserError(f"gpu={self.gpu} is not a device: use a CUDA device index, or -1 for the CPU.")


def register_configs() -> None:
    """Put the config dataclasses in Hydra's ConfigStore, where YAML files and overrides find them."""
    cs = ConfigStore.instance()
    # The schema: conf/config.yaml lists it first in its defaults, so YAML values are checked against it.
    cs.store(name="config_schema", node=Config)
    # Options of a config group: `dm=celeba` on the command line selects the `CelebADataModule` node.
    cs.store(group="dm", name="cmnist", node=CMNISTDataModule)
    cs.store(group="dm", name="celeba", node=CelebADataModule)
    cs.store(group="model", name="fcn", node=FcnFactory)
    cs.store(group="model", name="cnn", node=SimpleCNNFactory)
    register_sweeper_configs()  # `hydra/sweeper/resumable_optuna`, which conf/hydra/sweeper/fcn_params.yaml extends


def run(
    raw_config: DictConfig,
    output_dir: Path,
    *,
    on_checked: Callable[[], object] | None = None,
    on_accepted: Callable[[], object] | None = None,
) -> float:
    """Train and evaluate as configured; return the validation accuracy for sweepers to optimise.

    If `output_dir` holds a checkpoint (of a run that was killed or interrupted there), continue from it.
    Every check that can refuse the run (with UserError) comes before it writes anything there: then
    `on_accepted()` is called (main.py saves Hydra's record of the run, .hydra/, there), and training
    starts. A run that fails otherwise before it trains (a bug, a crash) calls it too, before it raises.
    `on_checked()` is called once the config is checked and the directory is this run's alone (main.py
    then saves the record where there is none, and takes it back if the run is refused).
    """
    cfg, logged_config = checked_config(raw_config)
    assert isinstance(cfg, Config)

    # Imported here, not at the top, so that `--help` and rejected overrides never wait for torch.
    from src.checkpoint import CHECKPOINT_FILE, Checkpoint, claim_output_dir
    from src.distributed import World

    # One process, or one of the tasks of a submitit job that trains this run together (src/distributed.py).
    world = World.of_this_task()
    world.log_from_main_only()
    output_dir.mkdir(parents=True, exist_ok=True)  # Hydra made it; a caller of `run()` may not have
    # Rank 0 claims the directory for the run, whose other processes work in it too.
    with claim_output_dir(output_dir) if world.is_main else nullcontext():
        if world.is_main and on_checked is not None:
            on_checked()
        # A checkpoint here of a run with other settings stops this one before the data is prepared.
        checkpoint = Checkpoint(path=output_dir / CHECKPOINT_FILE, config=logged_config, world=world)
        metrics_file = output_dir / METRICS_FILE
        if metrics_file.exists() and not metrics_file.is_file():
            raise UserError(f"{shown(metrics_file)} is not a file: move it away, so that the run can write it.")
        recorded = _finished_metrics(metrics_file)
        if recorded is not None and checkpoint.ended_with(recorded, epochs=cfg.opt.epochs):
            # Run again where it finished (a sweep continued after a stop): report, without running anything.
            log.info(
                f"Already finished: val/acc={recorded['val/acc']:.4f} (all metrics: {shown(metrics_file)}); "
                f"not run again (to run it afresh, delete {shown(checkpoint.path)})."
            )
            return recorded["val/acc"]
        log.info(f"Starting a run with seed {cfg.seed} and GPU {cfg.gpu}.")
        # Hydra's record of the run (.hydra/) is rank 0's to write, as everything else in the output directory.
        accepted = on_accepted if on_accepted is not None and world.is_main else lambda: None
        try:
            data, state = _prepare(cfg, checkpoint, world)
            trial, wandb_run = _reporters(cfg, logged_config, data, state, checkpoint=checkpoint, world=world)
        except UserError:
            raise  # refused: the output directory stays as it was
        except Exception:
            accepted()  # not refused but failed, as a run can fail while it trains: recorded, to be run again
            raise
        accepted()
        return _train_and_record(cfg, data, state, checkpoint, trial=trial, wandb_run=wandb_run, world=world)


def _prepare(cfg: Config, checkpoint: Checkpoint, world: World) -> tuple[Data, TrainingState]:
    """The data, and the model and optimiser as the checkpoint left them (if any); refused if they would not
    fit in memory, or if the checkpoint is of other data."""
    import torch

    from src.memory_check import check_batch_fits, check_data_and_weights_fit
    from src.training import TrainingState, check_batch_sizes, use_deterministic_kernels

    torch.manual_seed(cfg.seed)  # pyright: ignore[reportUnknownMemberType] (model initialisation, dropout)
    use_deterministic_kernels()
    device = world.device(cfg.gpu)
    check_data_and_weights_fit(cfg.dm, cfg.model, device)
    data = cfg.dm.build(seed=cfg.seed)
    checkpoint.bind_data(data)
    model = cfg.model.build(data.input_shape, out_dim=data.num_classes)
    batch_size = min(cfg.opt.batch_size, len(data.train))
    check_batch_sizes(model, num_train=len(data.train), batch_size=batch_size)
    check_batch_fits(model, data.input_shape, batch_size=batch_size, device=device, data_bytes=cfg.dm.memory_needed())
    model = world.prepare(model.to(device), device, seed=cfg.seed)
    log.info(f"Model architecture:\n{model}")
    state = TrainingState(
        model=model,
        optimizer=cfg.opt.build(model.parameters()),
        generator=torch.Generator().manual_seed(cfg.seed),  # the order of the training batches
    )
    checkpoint.restore(state)
    return data, state


def _train_and_record(
    cfg: Config,
    data: Data,
    state: TrainingState,
    checkpoint: Checkpoint,
    *,
    trial: StudyTrial | None,
    wandb_run: Run | None,
    world: World,
) -> float:
    """Train and test, then write metrics.json (rank 0); the validation accuracy. A signal that stops training
    ends the run here, once its checkpoint and metrics.json (status "interrupted") are saved."""
    from src.atomic_write import write_atomically
    from src.checkpoint import how_to_continue
    from src.stopping import INTERRUPTED, stop_on_signals

    device = next(state.model.parameters()).device
    exit_code = 1  # what W&B records if training raises
    try:
        with stop_on_signals() as stop, world.joined(device):
            metrics = _train_and_test(cfg, data, state, checkpoint, wandb_run, stop=stop, trial=trial, world=world)
        exit_code = INTERRUPTED if metrics is None else 0
    finally:
        if wandb_run is not None:
            wandb_run.finish(exit_code=exit_code)
    status = "interrupted" if metrics is None else "pruned" if trial is not None and trial.pruned else "finished"
    if trial is not None and metrics is not None and status == "finished":
        trial.complete(metrics["val/acc"])  # in the study now, whatever happens to the sweep
    output_dir = checkpoint.path.parent
    metrics_file = output_dir / METRICS_FILE
    record = {"status": status, "epoch": state.epoch, "data_source": data.source, "metrics": metrics or {}}
    # allow_nan=False: strict JSON, which training guarantees by stopping at a loss that is not finite.
    text = json.dumps(record, indent=2, allow_nan=False)
    try:
        if world.is_main:
            write_atomically(metrics_file, lambda file: file.write(text.encode() + b"\n"))
    except OSError as error:
        raise UserError(
            f"could not write {shown(metrics_file)} ({error}); the checkpoint is saved: make room, then to "
            f"continue, {how_to_continue(output_dir)}"
        ) from None
    if metrics is None:
        stop.end_run(checkpoint.path, output_dir, world)
    log.info(f"Final val/acc={metrics['val/acc']:.4f} (all metrics: {shown(metrics_file)})")
    return metrics["val/acc"]


def _reporters(
    cfg: Config,
    logged_config: dict[str, Any],
    data: Data,
    state: TrainingState,
    *,
    checkpoint: Checkpoint,
    world: World,
) -> tuple[StudyTrial | None, Run | None]:
    """What the run reports to beyond its output directory: its Optuna trial, if it is one, and its W&B run,
    if W&B is on. Rank 0's alone: one trial and one W&B run, however many processes train the run."""
    if not world.is_main:
        return None, None
    from src.optuna_trial import this_jobs_trial

    # None unless this run is a trial of an Optuna study (src/optuna_sweeper.py); a trial that continues
    # reports the epochs that its stopped run saved but did not report.
    trial = this_jobs_trial(state.history)
    wandb_run = cfg.wandb.build(logged_config | {"data_source": data.source}, resume_id=checkpoint.wandb_id)
    if wandb_run is not None:
        checkpoint.wandb_id = wandb_run.id
    return trial, wandb_run


def _finished_metrics(metrics_file: Path) -> Metrics | None:
    """The metrics recorded in `metrics_file` by a run that finished; None if there is none."""
    try:
        record = json.loads(metrics_file.read_text())
        return record["metrics"] if record["status"] == "finished" else None
    except (OSError, ValueError, KeyError, TypeError):  # none, or not one this program wrote
        return None


def _train_and_test(
    cfg: Config,
    data: Data,
    state: TrainingState,
    checkpoint: Checkpoint,
    wandb_run: Run | None,
    *,
    stop: StopRequest,
    trial: StudyTrial | None,
    world: World,
) -> Metrics | None:
    """Train from `state`, saving a checkpoint after each epoch, then test; return the final metrics, those of
    the last epoch if the study's pruner stopped the trial, or None if a signal stopped training (after saving
    a checkpoint, to be continued)."""
    from src.training import check_finite, evaluate, fit

    # Whether the study's pruner stopped the trial. Rank 0 alone reports to the study (`trial` is None in the
    # other processes); its pruner's word stops them all.
    pruned = world.max(trial is not None and trial.pruned) == 1

    def end_epoch(state: TrainingState) -> None:
        nonlocal pruned
        log.info(f"Epoch {state.epoch}/{cfg.opt.epochs}: {_summary(state.history[-1], 'val')}")
        if wandb_run is not None:
            wandb_run.log(state.history[-1] | {"epoch": state.epoch})
        checkpoint.save(state)
        if trial is not None:
            trial.report(state.history)  # after saving: a pruned trial's checkpoint holds its last epoch
        pruned = world.max(trial is not None and trial.pruned) == 1

    fit(
        state,
        data,
        opt=cfg.opt,
        on_epoch_end=end_epoch,
        stop_requested=lambda: stop.agree(world) or pruned,
        world=world,
    )
    if pruned:
        return state.history[-1]
    if state.epoch < cfg.opt.epochs:  # stopped by a signal
        checkpoint.save(state)
        return None
    test_metrics = evaluate(state.model, data.test, data.group_names, prefix="test", world=world)
    check_finite(test_metrics, "on the test set")
    log.info(f"Test: {_summary(test_metrics, 'test')}")
    if wandb_run is not None:
        wandb_run.log(test_metrics)
    return state.history[-1] | test_metrics


def _summary(metrics: dict[str, float], prefix: str) -> str:
    """The headline metrics of one split, for the console."""
    names = (f"{prefix}/acc", f"{prefix}/worst_group_acc", f"{prefix}/loss")
    return " ".join(f"{name}={metrics[name]:.4f}" for name in names)
