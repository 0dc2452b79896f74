"""`run()`: what one run does with its configuration: check it, build the data and the model, train, test,
and return the validation accuracy."""

from __future__ import annotations

import logging
import signal
from pathlib import Path
from typing import TYPE_CHECKING

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from src.checks.schema import checked_config
from src.common.paths import shown
from src.config import Config
from src.records.metrics import FINISHED, INTERRUPTED, METRIC, METRICS_FILE, PRUNED

if TYPE_CHECKING:
    import torch

    from src.data import Data
    from src.training.checkpoint import Checkpoint
    from src.training.distributed import World
    from src.training.loop import Metrics, TrainingState
    from src.training.reporters import Reporters
    from src.training.stopping import StopRequest

__all__ = ["run"]

log = logging.getLogger(__name__)


def run(raw_config: DictConfig, output_dir: Path | None = None) -> float:
    """Train and evaluate as configured, in `output_dir` (by default the output directory that Hydra gave the
    job); return the validation accuracy, which sweepers optimise.

    A checkpoint in the output directory (of a run that was stopped there) is continued; a run that finished
    there reports its result without running again. Every check that can refuse the run (UserError) comes
    before anything is written there."""
    cfg, logged_config = checked_config(raw_config)
    assert isinstance(cfg, Config)

    # Imported here, not at the top, so that `--help` and rejected overrides never wait for torch.
    from src.records.identity import code_identity
    from src.records.run_directory import RunDirectory
    from src.sweeps.continuation import bind_to_sweep
    from src.training.checkpoint import CHECKPOINT_FILE, Checkpoint
    from src.training.distributed import World
    from src.training.reporters import Reporters
    from src.training.stopping import stop_on_signals
    from src.training.threads import choose_threads

    # One process, or one of the tasks of a submitit job that train this run together.
    world = World.of_this_task()
    world.log_from_main_only()
    # Recorded with the settings (the last bits of a result depend on it); used once the checks below pass.
    threads = choose_threads(cfg.threads, tasks=world.local_size)
    raw_config.threads = logged_config["threads"] = threads.threads
    path = output_dir if output_dir is not None else Path(HydraConfig.get().runtime.output_dir)
    with RunDirectory.claim(path, raw_config, main=world.is_main) as directory:
        # A checkpoint here of a run with other settings stops this one before the data is prepared.
        checkpoint = Checkpoint(path=path / CHECKPOINT_FILE, config=logged_config, world=world)
        finished = directory.finished_result()
        if finished is not None and checkpoint.ended_with(finished.metrics, epochs=cfg.opt.epochs):
            log.info(
                f"Already finished: {METRIC}={finished.value:.4f} (all metrics: {shown(path / METRICS_FILE)}); "
                f"not run again (to run it afresh, delete {shown(checkpoint.path)})."
            )
            return finished.value
        log.info(f"Starting a run with seed {cfg.seed} and GPU {cfg.gpu}.")
        threads.use()
        with directory.accepting():
            data, state = _build(cfg, checkpoint, world)
            device = next(state.model.parameters()).device
            if world.is_main:  # which writes the results, and so what they belong to
                checkpoint.bind_code(code_identity(_device_name(device), path))
                bind_to_sweep(checkpoint.data)
            reporters = Reporters.start(
                cfg.wandb, logged_config, state, epochs=cfg.opt.epochs, checkpoint=checkpoint, world=world
            )
        try:
            with stop_on_signals() as stop, world.joined(device):
                status, metrics = _train_and_test(cfg, data, state, checkpoint, reporters, stop=stop, world=world)
        except BaseException:
            reporters.end(None)
            raise
        result = checkpoint.result(status, state.epoch, metrics)
        reporters.end(result)
        if world.is_main:
            directory.save_result(result)
        if result.status == INTERRUPTED:
            stop.end_run(checkpoint.path, path, world)
        if stop.cause is signal.SIGINT:  # Ctrl-C after the last step, as the run tested: its result is saved
            raise KeyboardInterrupt
    log.info(f"Final {METRIC}={result.value:.4f} (all metrics: {shown(path / METRICS_FILE)})")
    return result.value


def _build(cfg: Config, checkpoint: Checkpoint, world: World) -> tuple[Data, TrainingState]:
    """The data, and the model and optimiser as the checkpoint left them (if any); refused if they would not
    fit in memory, or if the checkpoint is of other data."""
    import torch

    from src.checks.memory import check_batch_fits, check_data_and_weights_fit
    from src.training.loop import TrainingState, check_batch_sizes, use_deterministic_kernels

    torch.manual_seed(cfg.seed)  # pyright: ignore[reportUnknownMemberType] (model initialisation, dropout)
    use_deterministic_kernels()
    device = world.device(cfg.gpu)
    check_data_and_weights_fit(cfg.dm, cfg.model, device, world)
    data = cfg.dm.build(seed=cfg.seed)
    checkpoint.bind_data(data)
    model = cfg.model.build(data.input_shape, out_dim=data.num_classes)
    batch_size = min(cfg.opt.batch_size, len(data.train))
    check_batch_sizes(model, num_train=len(data.train), batch_size=batch_size)
    check_batch_fits(
        model, data.input_shape, batch_size=batch_size, device=device, data_bytes=cfg.dm.memory_needed(), world=world
    )
    model = world.prepare(model.to(device), device, seed=cfg.seed)
    log.info(f"Model architecture:\n{model}")
    state = TrainingState(
        model=model,
        optimizer=cfg.opt.build(model.parameters()),
        generator=torch.Generator().manual_seed(cfg.seed),  # the order of the training batches
    )
    checkpoint.restore(state)
    return data, state


def _train_and_test(
    cfg: Config,
    data: Data,
    state: TrainingState,
    checkpoint: Checkpoint,
    reporters: Reporters,
    *,
    stop: StopRequest,
    world: World,
) -> tuple[str, Metrics]:
    """Train from `state`, saving a checkpoint after each epoch, then test; the run's status and final metrics.
    A signal stops training after the current step (the checkpoint is saved then: `interrupted`, without
    metrics), and the study's pruner after an epoch (`pruned`, with the metrics of that epoch)."""
    from src.training.loop import check_finite, evaluate, fit

    fit(
        state,
        data,
        opt=cfg.opt,
        on_epoch_end=reporters.end_epoch,
        stop_requested=lambda: stop.agree(world) or reporters.pruned,
        world=world,
    )
    if reporters.pruned:
        return PRUNED, state.history[-1]
    if state.epoch < cfg.opt.epochs:  # stopped by a signal
        checkpoint.save(state)
        return INTERRUPTED, {}
    test_metrics = evaluate(state.model, data.test, data.group_names, prefix="test", world=world)
    check_finite(test_metrics, "on the test set")
    reporters.end_test(test_metrics)
    return FINISHED, state.history[-1] | test_metrics


def _device_name(device: torch.device) -> str:
    """The device, as a result records it: `cpu`, or the GPU's model."""
    import torch

    return f"cuda: {torch.cuda.get_device_name(device)}" if device.type == "cuda" else device.type
