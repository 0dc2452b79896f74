"""The training loop and the metrics: plain PyTorch, with the whole data set held as tensors."""

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim import Optimizer
from tqdm import tqdm

from src.data import Data, Split
from src.optimisation import OptimisationCfg

__all__ = ["Metrics", "TrainingState", "evaluate", "fit"]

Metrics = dict[str, float]
# As small as a training batch: larger ones are no faster on the CPU, and their activations (tens of
# MB for the default fcn) fragment the memory that training reuses, raising the peak by up to 80 MB.
EVAL_BATCH_SIZE = 256


@dataclass(eq=False, kw_only=True)
class TrainingState:
    """What training changes (besides torch's global random state): all that a checkpoint saves."""

    model: nn.Module
    optimizer: Optimizer
    generator: torch.Generator  # draws the order of the training batches
    epoch: int = 0  # epochs completed
    step: int = 0  # optimiser steps done in the next epoch: non-zero only when training stopped within it
    history: list[Metrics] = field(default_factory=list[Metrics])  # validation metrics of each completed epoch


def fit(
    state: TrainingState,
    data: Data,
    *,
    opt: OptimisationCfg,
    on_epoch_end: Callable[[TrainingState], None],
    stop_requested: Callable[[], bool],
) -> None:
    """Train from `state` until `opt.epochs` epochs are done, or, checked before each epoch and after each
    optimiser step, until `stop_requested()`; `on_epoch_end` reports (and saves) the state after each epoch."""
    model, optimizer, generator = state.model, state.optimizer, state.generator
    device = next(model.parameters()).device
    # The whole data set moves to the device once: no copy from the host for each batch.
    train, val = data.train.to(device), data.val.to(device)
    while state.epoch < opt.epochs and not stop_requested():
        epoch = state.epoch + 1
        model.train()
        # The state that draws this epoch's order: restored if the epoch is cut short, so that a
        # checkpoint taken then draws the same order again when training continues.
        epoch_start_state = generator.get_state()
        order = torch.randperm(len(train), generator=generator).to(device)
        starts = range(state.step * opt.batch_size, len(train), opt.batch_size)
        # `disable=None` hides the bar when output is not a terminal (a log file, a SLURM job).
        for start in tqdm(starts, desc=f"Epoch {epoch}/{opt.epochs}", leave=False, disable=None):
            batch = order[start : start + opt.batch_size]
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=opt.mixed_precision):
                loss = F.cross_entropy(model(train.batch(batch)), train.labels[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()  # pyright: ignore[reportUnknownMemberType]
            optimizer.step()  # pyright: ignore[reportUnknownMemberType]
            state.step += 1
            if stop_requested():
                generator.set_state(epoch_start_state)
                return
        state.epoch, state.step = epoch, 0
        state.history.append(evaluate(model, val, data.group_names, prefix="val"))
        on_epoch_end(state)


@torch.inference_mode()
def evaluate(model: nn.Module, split: Split, group_names: list[str], *, prefix: str) -> Metrics:
    """Loss, accuracy, and accuracy per subgroup with the worst of them, as `prefix/name`."""
    device = next(model.parameters()).device
    split = split.to(device)
    model.eval()
    loss_sum = torch.zeros((), device=device)
    correct = torch.empty(len(split), dtype=torch.bool, device=device)
    for start in range(0, len(split), EVAL_BATCH_SIZE):
        end = start + EVAL_BATCH_SIZE
        logits = model(split.batch(slice(start, end)))
        loss_sum += F.cross_entropy(logits, split.labels[start:end], reduction="sum")
        correct[start:end] = logits.argmax(dim=1) == split.labels[start:end]
    metrics = {f"{prefix}/loss": loss_sum.item() / len(split), f"{prefix}/acc": correct.float().mean().item()}
    group_accs = {
        f"{prefix}/acc_{name}": correct[split.groups == group].float().mean().item()
        for group, name in enumerate(group_names)
        if (split.groups == group).any()
    }
    metrics[f"{prefix}/worst_group_acc"] = min(group_accs.values())
    return metrics | group_accs
