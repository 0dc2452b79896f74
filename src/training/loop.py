"""The training loop and the metrics: plain PyTorch, with the whole data set held as tensors."""

import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim import Optimizer
from tqdm import tqdm

from src.common.errors import RunFailedError, UserError
from src.data import Data, Split
from src.optimisation import OptimisationCfg
from src.training.distributed import ONE_PROCESS, World

__all__ = [
    "Metrics",
    "TrainingState",
    "check_batch_sizes",
    "check_finite",
    "evaluate",
    "fit",
    "use_deterministic_kernels",
]

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
    world: World = ONE_PROCESS,
) -> None:
    """Train from `state` until `opt.epochs` epochs are done, or, checked before each epoch and after each
    optimiser step, until `stop_requested()`; `on_epoch_end` reports (and saves) the state after each epoch.
    Raises RunFailedError when the loss stops being finite, before anything is saved.

    In a distributed run each process trains on its share of every batch (`opt.batch_size` is the batch
    of all processes together), and all of them compute the same metrics."""
    model, optimizer, generator = world.wrap(state.model), state.optimizer, state.generator
    device = next(model.parameters()).device
    # The whole data set moves to a GPU once: no copy from the host for each batch. On the CPU it stays where
    # it is (memory-mapped from the cache, shared by the processes of a node), and batches are gathered from it.
    train, val = data.train.to(device), data.val.to(device)
    while state.epoch < opt.epochs and not stop_requested():
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
            share = batch[world.shard(len(batch))]
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=opt.mixed_precision):
                # The sum over this process's share, scaled so that the average over the processes (which
                # DistributedDataParallel takes of the gradients) is the mean over the whole batch, the last
                # and shorter one too: the gradient of one process alone (exactly so, for one).
                logits = model(train.batch(share))
                loss = F.cross_entropy(logits, train.labels[share], reduction="sum") * world.size / len(batch)
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
        metrics = evaluate(state.model, val, data.group_names, prefix="val", world=world)
        check_finite(metrics, f"at the end of epoch {epoch}")
        state.history.append(metrics)
        on_epoch_end(state)


def use_deterministic_kernels() -> None:
    """The same seed gives the same result on a GPU too, as on the CPU: PyTorch's deterministic kernels
    (cuBLAS's need this workspace setting, read when CUDA first multiplies matrices), and a warning that
    names any operation without one. New memory is not filled first, as this mode would by default: no
    operation here reads memory it has not written, and filling costs a pass over every new buffer."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    # A property that the module defines at run time, unseen by type checkers.
    torch.utils.deterministic.fill_uninitialized_memory = False  # pyright: ignore[reportAttributeAccessIssue]


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
def evaluate(
    model: nn.Module,
    split: Split,
    group_names: list[str],
    *,
    prefix: str,
    world: World = ONE_PROCESS,
) -> Metrics:
    """Loss, accuracy, and accuracy per subgroup with the worst of them, as `prefix/name`. Over the whole
    split: in a distributed run each process evaluates its share, and their sums are added up."""
    device = next(model.parameters()).device
    split = split.to(device)
    model.eval()
    share = world.shard(len(split))
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros(len(group_names), dtype=torch.long, device=device)  # per subgroup
    for start in range(share.start, share.stop, EVAL_BATCH_SIZE):
        end = min(start + EVAL_BATCH_SIZE, share.stop)
        logits = model(split.batch(slice(start, end)))
        loss_sum += F.cross_entropy(logits, split.labels[start:end], reduction="sum")
        hits = logits.argmax(dim=1) == split.labels[start:end]
        correct.index_add_(0, split.groups[start:end], hits.long())
    counts = torch.bincount(split.groups[share], minlength=len(group_names))
    correct, counts = world.sum(torch.stack([correct, counts]))
    metrics = {
        f"{prefix}/loss": world.sum(loss_sum).item() / len(split),
        f"{prefix}/acc": (correct.sum() / len(split)).item(),
    }
    group_accs = {
        f"{prefix}/acc_{name}": (correct[group] / counts[group]).item()
        for group, name in enumerate(group_names)
        if counts[group] > 0
    }
    metrics[f"{prefix}/worst_group_acc"] = min(group_accs.values())
    return metrics | group_accs
