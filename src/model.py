"""Model factories: one dataclass per architecture, registered in the `model` config group."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING

from typing_extensions import override

from src.common.errors import UserError

if TYPE_CHECKING:
    from torch import nn

__all__ = ["Activation", "FcnFactory", "ModelFactory", "Norm", "SimpleCNNFactory"]

POOL = 2  # the max-pooling window of SimpleCNNFactory's blocks


class Activation(Enum):
    """Activation functions, by the name of their `torch.nn` class."""

    GELU = "GELU"
    RELU = "ReLU"
    SELU = "SELU"

    def build(self) -> nn.Module:
        from torch import nn

        module: type[nn.Module] = getattr(nn, self.value)
        return module()


class Norm(Enum):
    """Normalisation layers for fully connected networks."""

    BN = "BatchNorm1d"
    LN = "LayerNorm"

    def build(self, width: int) -> nn.Module:
        from torch import nn

        module: type[nn.Module] = getattr(nn, self.value)
        return module(width)


@dataclass(eq=False)  # a dataclass even without fields, so that Hydra can use it as a schema
class ModelFactory(ABC):
    """Interface for model factories."""

    @abstractmethod
    def build(self, input_shape: tuple[int, int, int], *, out_dim: int) -> nn.Module:
        """Build the model for inputs of shape (channels, height, width) and `out_dim` classes."""


@dataclass(eq=False, kw_only=True)
class FcnFactory(ModelFactory):
    """Factory for a fully connected network: `num_hidden` blocks of Linear, norm, activation."""

    num_hidden: int = 1
    hidden_dim: int | None = None  # None: as wide as the flattened input
    activation: Activation = Activation.GELU
    norm: Norm | None = Norm.LN
    dropout_prob: float = 0.0
    final_bias: bool = True
    input_norm: bool = False  # apply `norm` to the flattened input, before the first layer

    def __post_init__(self) -> None:
        if self.num_hidden < 0:
            raise UserError(f"model.num_hidden={self.num_hidden} must be 0 or more.")
        if self.hidden_dim is not None and self.hidden_dim < 1:
            raise UserError(f"model.hidden_dim={self.hidden_dim} must be 1 or more (or null).")
        if not 0 <= self.dropout_prob < 1:
            raise UserError(f"model.dropout_prob={self.dropout_prob} must be in [0, 1).")
        # Both shape the hidden layers: without any, they would be silently ignored.
        if self.num_hidden == 0 and self.hidden_dim is not None:
            raise UserError(
                f"model.hidden_dim={self.hidden_dim} has no effect without hidden layers (model.num_hidden=0): "
                "set model.num_hidden to 1 or more, or leave model.hidden_dim unset."
            )
        if self.num_hidden == 0 and self.dropout_prob > 0:
            raise UserError(
                f"model.dropout_prob={self.dropout_prob} has no effect without hidden layers (model.num_hidden=0): "
                "set model.num_hidden to 1 or more, or leave model.dropout_prob at 0."
            )
        if self.input_norm and self.norm is None:
            raise UserError("model.input_norm=true needs a model.norm (LN or BN).")

    @override
    def build(self, input_shape: tuple[int, int, int], *, out_dim: int) -> nn.Sequential:
        from torch import nn

        in_dim = input_shape[0] * input_shape[1] * input_shape[2]
        width = in_dim if self.hidden_dim is None else self.hidden_dim
        layers: list[nn.Module] = [nn.Flatten()]
        if self.input_norm and self.norm is not None:
            layers.append(self.norm.build(in_dim))
        for i in range(self.num_hidden):
            block: list[nn.Module] = [nn.Linear(in_dim if i == 0 else width, width)]
            if self.norm is not None:
                block.append(self.norm.build(width))
            block.append(self.activation.build())
            if self.dropout_prob > 0:
                block.append(nn.Dropout(self.dropout_prob))
            layers.append(nn.Sequential(*block))
        last_in = in_dim if self.num_hidden == 0 else width
        layers.append(nn.Linear(last_in, out_dim, bias=self.final_bias))
        return nn.Sequential(*layers)


@dataclass(eq=False, kw_only=True)
class SimpleCNNFactory(ModelFactory):
    """Factory for a LeNet-style CNN: two blocks of convolution, activation and max-pooling."""

    kernel_size: int = 5
    pool_stride: int = 2
    activation: Activation = Activation.RELU

    def __post_init__(self) -> None:
        if self.kernel_size < 1:
            raise UserError(f"model.kernel_size={self.kernel_size} must be 1 or more.")
        if self.pool_stride < 1:
            raise UserError(f"model.pool_stride={self.pool_stride} must be 1 or more.")

    @override
    def build(self, input_shape: tuple[int, int, int], *, out_dim: int) -> nn.Sequential:
        from torch import nn

        self._check_fits(input_shape)
        channels, height, width = input_shape
        layers: list[nn.Module] = []
        for out_channels in (6, 16):
            layers += [
                nn.Conv2d(channels, out_channels, self.kernel_size),
                self.activation.build(),
                nn.MaxPool2d(kernel_size=POOL, stride=self.pool_stride),
            ]
            channels = out_channels
            # The flattened size follows from the input shape, so any `dm.default_res` works.
            height, width = self._block_output(height), self._block_output(width)
        layers += [
            nn.Flatten(),
            nn.Linear(channels * height * width, 120),
            self.activation.build(),
            nn.Linear(120, 84),
            self.activation.build(),
            nn.Linear(84, out_dim),
        ]
        return nn.Sequential(*layers)

    def _block_output(self, side: int) -> int:
        """Side length after one block of convolution and pooling."""
        return _after_block(side, self.kernel_size, self.pool_stride)

    def _check_fits(self, input_shape: tuple[int, int, int]) -> None:
        """Refuse images too small for the two blocks, naming what makes them so: the kernel, where even a
        stride of 1 would leave nothing to pool; else the stride (and the kernel, where a smaller one fits)."""
        images = f"{input_shape[1]}x{input_shape[2]}"
        side = min(input_shape[1:])  # the shorter side is the first to run out
        kernel, stride = self.kernel_size, self.pool_stride
        if _fits(side, kernel, stride):
            return
        if not _fits(side, kernel, 1):
            raise UserError(
                f"model.kernel_size={kernel} is too large for {images} images: two convolution blocks leave nothing "
                "to pool. Use a smaller model.kernel_size or a larger dm.default_res."
            )
        smaller_kernel = next((size for size in range(kernel - 1, 0, -1) if _fits(side, size, stride)), None)
        largest_stride = next(size for size in range(stride - 1, 0, -1) if _fits(side, kernel, size))
        cause = f"model.pool_stride={stride}"
        fixes = [_at_most("model.pool_stride", largest_stride)]
        if smaller_kernel:  # the kernel, too, makes the images small: name it
            cause = f"model.kernel_size={kernel} with {cause}"
            fixes.insert(0, _at_most("model.kernel_size", smaller_kernel))
        first = "x".join(str(self._block_output(length)) for length in input_shape[1:])
        raise UserError(
            f"{cause} shrinks {images} images to {first} in the first convolution block, too small for the second: "
            f"use {', or '.join(fixes)}, or a larger dm.default_res."
        )


def _after_block(side: int, kernel: int, stride: int) -> int:
    """Side length after a block of a convolution of `kernel` and a pooling of `stride`; 0 where the convolution
    leaves less than the pooling needs."""
    after_conv = side - kernel + 1
    return 0 if after_conv < POOL else (after_conv - POOL) // stride + 1


def _at_most(key: str, largest: int) -> str:
    return f"{key}={largest}" if largest == 1 else f"{key}={largest} or less"


def _fits(side: int, kernel: int, stride: int) -> bool:
    """Whether two blocks leave something of images whose shorter side is `side`."""
    return _after_block(_after_block(side, kernel, stride), kernel, stride) >= 1
