"""Refusing a run that cannot fit in memory, before it allocates: a run too large for the machine
otherwise ends in a traceback from the allocator or, worse, is killed by the kernel without a word.

The estimates are lower bounds (the prepared data; the model's weights and gradients and the
activations of one batch), so that a run that fits is never refused; one that passes may still
need more (the optimiser's state, temporary copies).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

from src.errors import UserError

if TYPE_CHECKING:
    import torch
    from torch import nn

    from src.data import DataModule
    from src.model import ModelFactory

__all__ = ["available_bytes", "check_fits_in_memory"]

FLOAT_BYTES = 4  # float32 weights, gradients and activations
GB = 1e9


def check_fits_in_memory(
    data_module: DataModule, model_factory: ModelFactory, *, batch_size: int, device: torch.device
) -> None:
    """Refuse data, or a model, too large for the memory of `device`, before they are allocated."""
    import torch

    data_bytes, available = data_module.memory_needed(), available_bytes(device)
    if data_bytes > available:
        raise UserError(
            f"the prepared data would take {data_bytes / GB:.1f} GB (dm.default_res={data_module.default_res}), "
            f"more than the {available / GB:.1f} GB available on the {device.type.upper()}; "
            "use a smaller dm.default_res."
        )
    # A copy of the model on the meta device: shapes without storage, so nothing is allocated. One class:
    # their number is not known before the data is prepared.
    try:
        with torch.device("meta"):
            model = model_factory.build(data_module.input_shape, out_dim=1)
            num_parameters = sum(parameter.numel() for parameter in model.parameters())
            activations = _activation_count(model, torch.empty(batch_size, *data_module.input_shape))
    except UserError:
        raise  # the model cannot be built for these images at all
    except Exception:  # a model of your own that needs real tensors to be built: not estimated
        return
    needed = FLOAT_BYTES * (2 * num_parameters + activations)
    if device.type == "cuda":  # the data moves to the GPU as well
        needed += data_bytes
    if needed > available:
        raise UserError(
            f"the model has {_count(num_parameters)} parameters: training it needs at least {needed / GB:.1f} GB "
            f"(weights, gradients and the activations of a batch of {batch_size}), more than the "
            f"{available / GB:.1f} GB available on the {device.type.upper()}; use a smaller model "
            "(such as model.hidden_dim or model.num_hidden), smaller images (dm.default_res) or opt.batch_size."
        )


def available_bytes(device: torch.device) -> int:
    """Memory that a run may still take: free GPU memory, or on the CPU what the kernel reports as
    available, within the limit of this process's control group (a SLURM job's `--mem`, a container's)."""
    import torch

    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    meminfo = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
    available = int(meminfo["MemAvailable"].split()[0]) * 1024
    cgroup = Path("/sys/fs/cgroup")
    try:
        limit = (cgroup / "memory.max").read_text().strip()
        if limit != "max":
            available = min(available, int(limit) - int((cgroup / "memory.current").read_text()))
    except (OSError, ValueError):
        pass  # no cgroup v2 limit to read
    return available


def _activation_count(model: nn.Module, batch: torch.Tensor) -> int:
    """The number of values that a forward pass of `batch` produces in the model's layers (kept for backward)."""
    counts: list[int] = []

    def count(module: nn.Module, inputs: object, output: torch.Tensor) -> None:
        counts.append(output.numel())

    handles = [
        module.register_forward_hook(count)  # pyright: ignore[reportUnknownMemberType]
        for module in model.modules()
        if not list(module.children())  # leaf layers; containers would count their layers' outputs again
    ]
    try:
        model(batch)
    finally:
        for handle in handles:
            handle.remove()
    return sum(counts)


def _count(number: int) -> str:
    """1234567 -> '1.2 M'."""
    exponent = min(int(math.log10(max(number, 1)) // 3), 4)
    return str(number) if exponent == 0 else f"{number / 1000**exponent:.1f} {' kMGT'[exponent]}"
