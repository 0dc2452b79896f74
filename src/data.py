"""The data module interface: a config dataclass whose `build()` loads the data as tensors."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from omegaconf import II

from src.errors import UserError

if TYPE_CHECKING:
    import torch
    from torch import Tensor

__all__ = ["Data", "DataModule", "Split"]


@dataclass(frozen=True)
class Split:
    """One split of a data set, held whole in memory; batches are formed by indexing."""

    images: Tensor  # uint8, (N, C, H, W): four times smaller than float until a batch is formed
    labels: Tensor  # int64, (N,): the class to predict
    groups: Tensor  # int64, (N,): the subgroup (a colour, an attribute) for fairness metrics
    # For images kept grey, (N, 1, H, W), and drawn in their group's colour as a batch is formed (three
    # times less memory than colour images): each group's colour, (num_groups, 3), RGB in [0, 1].
    group_colors: Tensor | None = None

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """The shape of one image as the model sees it: (channels, height, width)."""
        channels, height, width = self.images.shape[1:]
        return (channels if self.group_colors is None else 3), height, width

    def batch(self, index: Tensor | slice) -> Tensor:
        """The images at `index` as the model sees them: float, in [0, 1], in colour where they are tinted."""
        images = self.images[index].float().div_(255)
        if self.group_colors is not None:
            images = images * self.group_colors[self.groups[index], :, None, None]
        return images

    def to(self, device: torch.device) -> Split:
        """This split on `device` (the same tensors if they are there already)."""
        return Split(
            images=self.images.to(device),
            labels=self.labels.to(device),
            groups=self.groups.to(device),
            group_colors=None if self.group_colors is None else self.group_colors.to(device),
        )


@dataclass(frozen=True)
class Data:
    """Everything the training loop needs to know about the data."""

    train: Split
    val: Split
    test: Split
    num_classes: int
    group_names: list[str]  # the name of each subgroup index, used in metric names
    source: str  # where the images came from, recorded with the results

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return self.train.image_shape


@dataclass(eq=False, kw_only=True)
class DataModule(ABC):
    """Interface for data modules; the fields shared by all of them."""

    # An interpolation, resolved when the config is used: $HYDRA_EXAMPLE_DATA if set, else ./data.
    root: Path = II("oc.env:HYDRA_EXAMPLE_DATA,data")  # noqa: RUF009 (a constant string)
    download: bool = True  # fetch missing files (the data set's own downloader)
    default_res: int = 28  # side length of the square images fed to the model

    def __post_init__(self) -> None:
        if self.default_res < 1:
            raise UserError(f"dm.default_res={self.default_res} must be 1 or more.")

    @abstractmethod
    def build(self, *, seed: int) -> Data:
        """Load the data; `seed` fixes every random choice (splits, colours)."""
