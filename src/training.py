"""The training loop and the metrics: plain PyTorch, with the whole data set held as tensors."""

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim import Optimizer
from tqdm import tqdm

from src.data import Data, Split
from src.optimisation import OptimisationCfg

__all__ = ["evaluate", "fit"]

Metrics = dict[str, float]
EVAL_BATCH_SIZE = 1024


def fit(
    model: nn.Module,
    optimizer: Optimizer,
    data: Data,
    *,
    opt: OptimisationCfg,
    generator: torch.Generator,
    on_epoch_end: Callable[[int, Metrics], None],
) -> Metrics:
    """Train for `opt.epochs` epochs; return the validation metrics, which are reported after each."""
    device = next(model.parameters()).device
    # The whole data set moves to the device once: no copy from the host for each batch.
    train = _to_device(data.train, device)
    val = _to_device(data.val, device)
    metrics: Metrics = {}
    for epoch in range(1, opt.epochs + 1):
        model.train()
        order = torch.randperm(len(train), generator=generator).to(device)
        starts = range(0, len(train), opt.batch_size)
        # `disable=None` hides the bar when output is not a terminal (a log file, a SLURM job).
        for start in tqdm(starts, desc=f"Epoch {epoch}/{opt.epochs}", leave=False, disable=None):
            batch = order[start : start + opt.batch_size]
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=opt.mixed_precision):
                loss = F.cross_entropy(model(_as_float(train.images[batch])), train.labels[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()  # pyright: ignore[reportUnknownMemberType]
            optimizer.step()  # pyright: ignore[reportUnknownMemberType]
        metrics = evaluate(model, val, data.group_names, prefix="val")
        on_epoch_end(epoch, metrics)
    return metrics


@torch.inference_mode()
def evaluate(model: nn.Module, split: Split, group_names: list[str], *, prefix: str) -> Metrics:
    """Loss, accuracy, and accuracy per subgroup with the worst of them, as `prefix/name`."""
    device = next(model.parameters()).device
    split = _to_device(split, device)
    model.eval()
    loss_sum = torch.zeros((), device=device)
    correct = torch.empty(len(split), dtype=torch.bool, device=device)
    for start in range(0, len(split), EVAL_BATCH_SIZE):
        end = start + EVAL_BATCH_SIZE
        logits = model(_as_float(split.images[start:end]))
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


def _as_float(images: torch.Tensor) -> torch.Tensor:
    """A batch of uint8 images as floats in [0, 1], made only when the batch is used."""
    return images.float().div_(255)


def _to_device(split: Split, device: torch.device) -> Split:
    return Split(images=split.images.to(device), labels=split.labels.to(device), groups=split.groups.to(device))
