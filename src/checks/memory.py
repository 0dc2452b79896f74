"""Refusing a run that cannot fit in memory, before it allocates: a run too large for the machine
otherwise ends in a traceback from the allocator or, worse, is killed by the kernel without a word.

The estimates are lower bounds (the prepared data; the model's weights and gradients; the activations
of a batch), so that a run that fits is never refused; one that passes may still need more (the
optimiser's state, temporary copies). The processes of a distributed run that share a node share its
memory: on the CPU, the data counts once (they read it from one memory-mapped cache) and the rest once per
process; on GPUs, each process has a GPU of its own, with the data and the rest.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

from src.common.errors import UserError

if TYPE_CHECKING:
    import torch
    from torch import nn

    from src.data import DataModule
    from src.model import ModelFactory
    from src.training.distributed import World

__all__ = ["available_bytes", "check_batch_fits", "check_data_and_weights_fit"]

FLOAT_BYTES = 4  # float32 weights, gradients and activations
GB = 1e9
SMALLER_MODEL = "use a smaller model (such as model.hidden_dim or model.num_hidden), or smaller images (dm.default_res)"
FEWER_PROCESSES = "use fewer processes per node (hydra.launcher.tasks_per_node)"


class _WeightsTooLargeError(Exception):
    """Raised while a model is built to be counted, once its weights alone are too large: it stops the build."""


def check_data_and_weights_fit(
    data_module: DataModule, model_factory: ModelFactory, device: torch.device, world: World | None = None
) -> None:
    """Refuse data, or a model's weights and gradients, too large for the memory of `device` (shared by the
    processes of `world` on this node, by default this one alone), before the data is prepared (minutes, and
    a cache on disk) and the model built."""
    import torch
    from torch.nn.modules.module import register_module_parameter_registration_hook

    data_bytes, available = data_module.memory_needed(), available_bytes(device)
    if data_bytes > available:
        raise UserError(
            f"the prepared data would take {data_bytes / GB:.1f} GB (dm.default_res={data_module.default_res}), "
            f"more than the {available / GB:.1f} GB available on the {device.type.upper()}; "
            "use a smaller dm.default_res."
        )
    sharing = _processes_sharing(device, world)
    budget = (available - data_bytes) / sharing  # for the weights and gradients of each process
    num_parameters = 0

    def count(module: nn.Module, name: str, parameter: torch.nn.Parameter | None) -> None:
        nonlocal num_parameters
        num_parameters += 0 if parameter is None else parameter.numel()
        if 2 * FLOAT_BYTES * num_parameters > budget:
            raise _WeightsTooLargeError  # a model of a billion layers need not be built to the end to be refused

    # Built on the meta device: shapes without storage, so nothing is allocated. One class: their number
    # is not known before the data is prepared.
    handle = register_module_parameter_registration_hook(count)
    try:
        with torch.device("meta"):
            model_factory.build(data_module.input_shape, out_dim=1)
    except _WeightsTooLargeError:
        weights = 2 * FLOAT_BYTES * num_parameters
        where = f"the {available / GB:.1f} GB available on the {device.type.upper()}"
        if sharing == 1:
            raise UserError(
                f"the model has more than {_count(num_parameters)} parameters: their weights and gradients alone "
                f"take {weights / GB:.1f} GB, more than the {budget / GB:.1f} GB available on the "
                f"{device.type.upper()}; {SMALLER_MODEL}."
            ) from None
        raise UserError(
            f"{sharing} processes on this node need at least {(data_bytes + sharing * weights) / GB:.1f} GB: the "
            f"prepared data once ({data_bytes / GB:.1f} GB, which they share), and in each the weights and gradients "
            f"of more than {_count(num_parameters)} parameters ({weights / GB:.1f} GB), more than {where}; "
            f"{FEWER_PROCESSES}, or {SMALLER_MODEL[4:]}."
        ) from None
    except UserError:
        raise  # the model cannot be built for these images at all
    except Exception:  # a model of your own that needs real tensors to be built: not estimated
        pass
    finally:
        handle.remove()


def check_batch_fits(
    model: nn.Module,
    input_shape: tuple[int, int, int],
    *,
    batch_size: int,
    device: torch.device,
    data_bytes: int,
    world: World | None = None,
) -> None:
    """Refuse a batch whose activations, with the model's weights and gradients and the data, would not fit on
    `device` (shared by the processes of `world` on this node, each with its share of the batch): measured on
    one image on the CPU (the model is there until it moves to `device`)."""
    import torch

    activations = 0

    def count(module: nn.Module, inputs: object, output: torch.Tensor) -> None:
        nonlocal activations
        activations += output.numel()

    leaves = [module for module in model.modules() if not list(module.children())]  # containers count twice
    handles = [module.register_forward_hook(count) for module in leaves]  # pyright: ignore[reportUnknownMemberType]
    training = model.training
    try:
        # eval: dropout draws no random numbers and batch norm keeps its statistics, so that the run that
        # follows is the same as without the measurement.
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, *input_shape))
    finally:
        model.train(training)
        for handle in handles:
            handle.remove()
    num_parameters = sum(parameter.numel() for parameter in model.parameters())
    share = -(-batch_size // (1 if world is None else world.size))  # each process computes its share of a batch
    per_process = FLOAT_BYTES * (2 * num_parameters + share * activations)
    sharing = _processes_sharing(device, world)
    needed = data_bytes + sharing * per_process
    available = available_bytes(device)
    if needed <= available:
        return
    where = f"the {available / GB:.1f} GB available on the {device.type.upper()}"
    if sharing == 1:
        raise UserError(
            f"training needs at least {needed / GB:.1f} GB (the prepared data, the weights and gradients of "
            f"{_count(num_parameters)} parameters, and the activations of a batch of {share}), more than {where}; "
            f"use a smaller opt.batch_size, or {SMALLER_MODEL[4:]}."
        )
    raise UserError(
        f"{sharing} processes on this node need at least {needed / GB:.1f} GB: the prepared data once "
        f"({data_bytes / GB:.1f} GB, which they share), and in each {per_process / GB:.1f} GB (the weights and "
        f"gradients of {_count(num_parameters)} parameters, and the activations of its share of a batch, {share} "
        f"images), more than {where}; {FEWER_PROCESSES}, a smaller opt.batch_size, or {SMALLER_MODEL[4:]}."
    )


def _processes_sharing(device: torch.device, world: World | None) -> int:
    """How many processes of the run share the memory of `device`: on the CPU those of this node; a GPU is
    each process's own."""
    return 1 if world is None or device.type == "cuda" else world.local_size


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


def _count(number: int) -> str:
    """1234567 -> '1.2 M'."""
    exponent = min(int(math.log10(max(number, 1)) // 3), 4)
    return str(number) if exponent == 0 else f"{number / 1000**exponent:.1f} {' kMGT'[exponent]}"
