"""How the model is trained: the optimiser, its settings and the length of training."""

from __future__ import annotations

import importlib
import inspect
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from src.common.errors import UserError

if TYPE_CHECKING:
    from torch import Tensor
    from torch.optim import Optimizer

__all__ = ["TRUSTED_OPTIMIZER_MODULES", "OptimisationCfg"]

# The modules (with their submodules) that `opt.optimizer_cls` may come from: a config names code to
# import, so code from anywhere else is refused before it is imported (and could run). The list is
# here, in code you edit, not in the config, which an experiment file from someone else can change;
# add the module of an optimiser of your own if you trust its code.
TRUSTED_OPTIMIZER_MODULES = ("torch.optim",)


@dataclass(eq=False, kw_only=True)
class OptimisationCfg:
    """Settings of the optimiser and the training loop."""

    lr: float = 5.0e-5
    weight_decay: float = 0.0
    optimizer_cls: str = "torch.optim.AdamW"  # dotted path to a `torch.optim.Optimizer` subclass
    optimizer_kwargs: dict[str, Any] | None = None  # extra arguments, e.g. {betas: [0.9, 0.99]}
    epochs: int = 2
    batch_size: int = 256
    mixed_precision: bool = False  # train in bfloat16 autocast: faster on recent GPUs, slower on most CPUs

    def __post_init__(self) -> None:
        if not 0 < self.lr < math.inf:  # also false for nan
            raise UserError(f"opt.lr={self.lr} must be a positive number.")
        if not 0 <= self.weight_decay < math.inf:
            raise UserError(f"opt.weight_decay={self.weight_decay} must be a number, 0 or more.")
        if self.epochs < 1:
            raise UserError(f"opt.epochs={self.epochs} must be 1 or more.")
        if self.batch_size < 1:
            raise UserError(f"opt.batch_size={self.batch_size} must be 1 or more.")
        for key in ("lr", "weight_decay"):
            if key in (self.optimizer_kwargs or {}):  # one of the two would be ignored
                raise UserError(
                    f"opt.optimizer_kwargs={self.optimizer_kwargs} sets {key}, as opt.{key} does: set it there."
                )
        module_name = self.optimizer_cls.rpartition(".")[0]
        trusted = TRUSTED_OPTIMIZER_MODULES
        if not any(module_name == module or module_name.startswith(f"{module}.") for module in trusted):
            raise UserError(
                f"opt.optimizer_cls={self.optimizer_cls} is not from a trusted module {trusted}; "
                "if you trust its code, add its module to TRUSTED_OPTIMIZER_MODULES in src/optimisation.py."
            )

    def build(self, params: Iterable[Tensor]) -> Optimizer:
        """Build the optimiser for the given parameters, in its fastest implementation for their device:
        the fused one (one pass over the weights per step instead of several) where the optimiser has
        one for that device, else PyTorch's choice (the foreach one on GPUs). An explicit `fused` or
        `foreach` in `optimizer_kwargs` wins.

        Whatever the optimiser raises for the user's settings, as it is built or at its first step (torch
        checks some settings only there), is one line that names the settings it was given: a step is taken
        first on a one-element parameter of the same device and dtype."""
        optimizer_cls = self._optimizer_cls()
        params = list(params)
        arguments = self._arguments(optimizer_cls)

        def make(tensors: list[Tensor], **implementation: bool) -> Optimizer:
            return optimizer_cls(tensors, **(arguments | implementation))

        implementation = self._fastest_implementation(make, params)
        if params:
            problem = _why_no_step(make, params[0], **implementation)
            if problem is not None:
                given = ", ".join(f"opt.{key}={value}" for key, value in self._given(arguments).items())
                raise UserError(f"{self.optimizer_cls} cannot train with {given}: {problem}")
        optimizer = make(params, **implementation)
        optimizer.register_load_state_dict_pre_hook(_keep_implementation)
        return optimizer

    def _arguments(self, optimizer_cls: Callable[..., Optimizer]) -> dict[str, Any]:
        """The optimiser's keyword arguments: `lr`, `weight_decay` where it takes one (or is given one: it then
        refuses it) and `optimizer_kwargs`."""
        kwargs = self.optimizer_kwargs or {}
        takes_weight_decay = "weight_decay" in inspect.signature(optimizer_cls).parameters
        weight_decay = {"weight_decay": self.weight_decay} if takes_weight_decay or self.weight_decay else {}
        return {"lr": self.lr, **weight_decay, **kwargs}

    def _given(self, arguments: dict[str, Any]) -> dict[str, Any]:
        """The settings that made `arguments`, as the user gave them."""
        given = {key: arguments[key] for key in ("lr", "weight_decay") if key in arguments}
        return given | ({"optimizer_kwargs": self.optimizer_kwargs} if self.optimizer_kwargs else {})

    def _fastest_implementation(self, make: Callable[..., Optimizer], params: list[Tensor]) -> dict[str, bool]:
        """`{"fused": True}` where the optimiser has a fused kernel for the parameters' device; else nothing
        (PyTorch's choice), and nothing where `optimizer_kwargs` chooses."""
        kwargs = self.optimizer_kwargs or {}
        if not params:
            return {}
        if kwargs.get("fused"):  # it would fail at the first step where there is no such kernel: say so now
            problem = _why_no_step(make, params[0])
            if problem is not None:
                raise UserError(
                    f"opt.optimizer_kwargs={kwargs}: {self.optimizer_cls} cannot be fused here ({problem}); "
                    "leave `fused` out to get the fastest implementation there is."
                )
            return {}
        takes_fused = "fused" in inspect.signature(self._optimizer_cls()).parameters
        if "foreach" in kwargs or "fused" in kwargs or not takes_fused:
            return {}
        return {"fused": True} if _why_no_step(make, params[0], fused=True) is None else {}

    def _optimizer_cls(self) -> Callable[..., Optimizer]:
        """The class that `optimizer_cls` names; an error if it names no optimiser."""
        from torch.optim import Optimizer

        module_name, _, class_name = self.optimizer_cls.rpartition(".")
        try:
            optimizer_cls = getattr(importlib.import_module(module_name), class_name)
        except (ImportError, AttributeError, ValueError):
            optimizer_cls = None
        if not (isinstance(optimizer_cls, type) and issubclass(optimizer_cls, Optimizer)):
            raise UserError(
                f"opt.optimizer_cls={self.optimizer_cls} is not an optimiser class; "
                "use a dotted path such as torch.optim.SGD."
            )
        # Subclasses take `lr` and `weight_decay`, which the base class's signature does not show.
        return cast(Callable[..., Optimizer], optimizer_cls)


def _why_no_step(make: Callable[..., Optimizer], param: Tensor, **implementation: bool) -> str | None:
    """Why `make(params, **implementation)` cannot be built, or cannot step on `param`'s device and dtype; None
    if it can.

    Only a step tells: PyTorch's optimisers check some settings at their first step, not when they are built
    (`differentiable`, a fused kernel for the device: Adagrad's is for the CPU only; LBFGS's step needs a
    closure). So one step is taken on a one-element parameter of the same device and dtype.
    """
    import torch

    probe = torch.zeros(1, device=param.device, dtype=param.dtype, requires_grad=True)
    probe.grad = torch.ones_like(probe)
    try:
        make([probe], **implementation).step()
    except Exception as error:  # whatever the optimiser's code raises for these settings
        return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return None


def _keep_implementation(optimizer: Optimizer, state_dict: dict[str, Any]) -> dict[str, Any]:
    """A `load_state_dict` pre-hook: keep the implementation chosen for this device. The saved state names
    the one it was saved with, which may have no kernel here (a run saved on the CPU with fused Adagrad
    may continue on a GPU)."""
    groups = [
        saved | {key: current[key] for key in ("fused", "foreach") if key in current}
        for saved, current in zip(state_dict["param_groups"], optimizer.param_groups, strict=False)
    ]
    return state_dict | {"param_groups": groups}
