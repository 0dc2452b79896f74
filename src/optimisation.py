"""How the model is trained: the optimiser, its settings and the length of training."""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from src.errors import UserError

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
        module_name = self.optimizer_cls.rpartition(".")[0]
        trusted = TRUSTED_OPTIMIZER_MODULES
        if not any(module_name == module or module_name.startswith(f"{module}.") for module in trusted):
            raise UserError(
                f"opt.optimizer_cls={self.optimizer_cls} is not from a trusted module {trusted}; "
                "if you trust its code, add its module to TRUSTED_OPTIMIZER_MODULES in src/optimisation.py."
            )

    def build(self, params: Iterable[Tensor]) -> Optimizer:
        """Build the optimiser for the given parameters."""
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
        kwargs = self.optimizer_kwargs or {}
        # Subclasses take `lr` and `weight_decay`, which the base class's signature does not show.
        build_optimizer = cast(Callable[..., Optimizer], optimizer_cls)
        try:
            return build_optimizer(params, lr=self.lr, weight_decay=self.weight_decay, **kwargs)
        except (TypeError, ValueError) as error:  # an unknown argument; a value out of range
            raise UserError(f"opt.optimizer_kwargs={kwargs} do not fit {self.optimizer_cls}: {error}") from None
