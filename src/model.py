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

        channels, height, width = input_shape
        layers: list[nn.Module] = []
        for out_channels in (6, 16):
            layers += [
                nn.Conv2d(channels, out_channels, self.kernel_size),
                self.activation.build(),
                nn.MaxPool2d(kernel_size=2, stride=self.pool_stride),
            ]
            channels = out_channels
            # The flattened size follows from the input shape, so any `dm.default_res` works.
            height, width = self._block_output(height, input_shape), self._block_output(width, input_shape)
        layers += [
            nn.Flatten(),
            nn.Linear(channels * height * width, 120),
            self.activation.build(),
            nn.Linear(120, 84),
            self.activation.build(),
            nn.Linear(84, out_dim),
        ]
        return nn.Sequential(*layers)

    def _block_output(self, side: int, input_shape: tuple[int, int, int]) -> int:
        """Side length after one convolution and pooling block; an error if nothing is left."""
        after_conv = side - self.kernel_size + 1
        if after_conv < 2:
            raise UserError(
                f"model.kernel_size={self.kernel_size} is too large for {input_shape[1]}x"
                f"{input_shape[2]} images: two convolution blocks leave nothing to pool. "
                "Use a smaller model.kernel_size or a larger dm.default_res."
            )
        return (after_conv - 2) // self.pool_stride + 1
