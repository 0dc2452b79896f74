"""The training loop and the metrics: plain PyTorch, with the whole data set held as tensors."""

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim import Optimizer
from tqdm import tqdm

from src.data import Data, Split
from src.errors import RunFailedError, UserError
from src.optimisation import OptimisationCfg

__all__ = ["Metrics", "TrainingState", "check_batch_sizes", "check_finite", "evaluate", "fit"]

Metrics = dict[str, float]
DIVERGED = "training diverged: try a smaller opt.lr. The checkpoint of the last epoch, if any, is intact."
# As small as a training batch: larger ones are no faster on the CPU, and their activations (tens of
# MB for the default fcn) fragment the memory that training reuses, raising the peak by up to 80 MB.
EVAL_BATCH_SIZE = 256
# Every this many steps, and at the end of each epoch, training checks that its loss is still a number.
# Not at every step: on a GPU, reading a value back makes the CPU wait for the GPU.
FINITE_CHECK_STEPS = 100


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
    """Train from `state` until `opt.epochs` epochs are done, or, checked after each optimiser step,
    until `stop_requested()`; `on_epoch_end` reports (and saves) the state after each epoch. Raises RunFailedError
    when the loss stops being finite, before anything is saved."""
    model, optimizer, generator = state.model, state.optimizer, state.generator
    device = next(model.parameters()).device
    # The whole data set moves to the device once: no copy from the host for each batch.
    train, val = data.train.to(device), data.val.to(device)
    while state.epoch < opt.epochs:
        epoch = state.epoch + 1
        model.train()
        # The state that draws this epoch's order: restored if the epoch is cut short, so that a
        # checkpoint taken then draws the same order again when training continues.
        epoch_start_state = generator.get_state()
        order = torch.randperm(len(train), generator=generator).to(device)
        starts = range(state.step * opt.batch_size, len(train), opt.batch_size)
        losses = LossRecord(epoch=epoch, first_step=state.step, device=device, size=len(starts))
        # `disable=None` hides the bar when output is not a terminal (a log file, a SLURM job).
        for start in tqdm(starts, desc=f"Epoch {epoch}/{opt.epochs}", leave=False, disable=None):
            batch = order[start : start + opt.batch_size]
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=opt.mixed_precision):
                loss = F.cross_entropy(model(train.batch(batch)), train.labels[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()  # pyright: ignore[reportUnknownMemberType]
            optimizer.step()  # pyright: ignore[reportUnknownMemberType]
            losses.add(loss)
            state.step += 1
            if state.step % FINITE_CHECK_STEPS == 0:
                losses.check()
            if stop_requested():
                losses.check()  # a checkpoint is saved next: never one of a model that diverged
                generator.set_state(epoch_start_state)
                return
        losses.check()
        state.epoch, state.step = epoch, 0
        metrics = evaluate(model, val, data.group_names, prefix="val")
        check_finite(metrics, f"at the end of epoch {epoch}")
        state.history.append(metrics)
        on_epoch_end(state)


def check_batch_sizes(model: nn.Module, *, num_train: int, batch_size: int) -> None:
    """Refuse batches of one image for a model with batch norm over features (BatchNorm1d), which cannot train
    on them: a batch of one has no variance (torch raises)."""
    if not any(isinstance(module, nn.BatchNorm1d) for module in model.modules()):
        return
    if batch_size == 1 or num_train % batch_size == 1:
        which = "every batch" if batch_size == 1 else f"the last batch of each epoch ({num_train} training images)"
        raise UserError(
            f"the model's batch norm cannot train on a batch of one image, and opt.batch_size={batch_size} makes "
            f"{which} one image: choose another opt.batch_size."
        )


def check_finite(metrics: Metrics, when: str) -> None:
    """Raise RunFailedError if a metric is not finite (nan or inf): the model no longer computes numbers."""
    for name, value in metrics.items():
        if not math.isfinite(value):
            raise RunFailedError(f"{name} became {value} {when}; {DIVERGED}")


class LossRecord:
    """The training losses of one epoch, kept on the device, so that a loss that is not finite (inf or
    nan: training diverged) is found without a wait for the device at every step."""

    def __init__(self, *, epoch: int, first_step: int, device: torch.device, size: int) -> None:
        self.epoch, self.first_step = epoch, first_step
        self.losses = torch.zeros(size, device=device)
        self.count = 0

    def add(self, loss: torch.Tensor) -> None:
        self.losses[self.count] = loss.detach()
        self.count += 1

    def check(self) -> None:
        """Raise RunFailedError if a loss recorded so far is not finite, naming the first one."""
        finite = torch.isfinite(self.losses[: self.count])
        if not finite.all():
            first = int((~finite).nonzero()[0])
            raise RunFailedError(
                f"the training loss became {self.losses[first].item()} at epoch {self.epoch}, step "
                f"{self.first_step + first + 1}; {DIVERGED}"
            )


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
