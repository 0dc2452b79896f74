"""Coloured MNIST: digits drawn in colour, the colour being a subgroup beside the label."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING

from typing_extensions import override

from src.common.errors import UserError
from src.data import Data, DataModule, Split, hash_files

if TYPE_CHECKING:
    from torch import Tensor

__all__ = ["CMNISTDataModule", "DigitSource", "TintedSplit"]

log = logging.getLogger(__name__)
# Part of the cache key: raise it when the preparation changes, so that no old cache is read.
# 2: the digits stay grey (and are coloured as each batch is formed).
CACHE_FORMAT = 2
TRAIN_DIGITS, TEST_DIGITS = 60_000, 10_000  # as many as MNIST has, synthetic digits too

# Ten colours that stay distinct for most forms of colour blindness.
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (230, 25, 75),
    "green": (60, 180, 75),
    "blue": (0, 130, 200),
    "yellow": (255, 225, 25),
    "orange": (245, 130, 48),
    "purple": (145, 30, 180),
    "cyan": (70, 240, 240),
    "magenta": (240, 50, 230),
    "lime": (210, 245, 60),
    "pink": (250, 190, 212),
}


@dataclass(frozen=True, kw_only=True)
class TintedSplit(Split):
    """Grey digits, (N, 1, H, W), drawn in their group's colour as each batch is formed: three times
    less memory than colour images."""

    group_colors: Tensor  # each group's colour, (num_groups, 3), RGB in [0, 1]

    @property
    @override
    def image_shape(self) -> tuple[int, int, int]:
        _, height, width = self.images.shape[1:]
        return 3, height, width

    @override
    def batch(self, index: Tensor | slice) -> Tensor:
        return super().batch(index) * self.group_colors[self.groups[index], :, None, None]


class DigitSource(Enum):
    """Where the digits come from."""

    AUTO = "auto"  # MNIST if it is on disk or can be downloaded, else synthetic digits
    MNIST = "mnist"
    SYNTHETIC = "synthetic"


@dataclass(eq=False, kw_only=True)
class CMNISTDataModule(DataModule):
    """Coloured MNIST. The training split can tie colour to label (`correlation`) to plant a
    shortcut; validation and test colours are always random, so their per-colour accuracy shows
    whether the model learnt the digit or the colour."""

    # digit -> label, e.g. `+dm.label_map={0: 0, 1: 1}` for a binary task; other digits are dropped.
    # (The `+`: Hydra can only add a dict where the current value is null, not override one.)
    label_map: dict[int, int] | None = None
    colors: list[int] | None = None  # palette entries to draw with; None: all of them
    num_colors: int = 10  # palette size: the first `num_colors` of the ten colours
    correlation: float = 0.0  # chance that a training digit gets its label's colour, else random
    val_prop: float = 0.2  # share of the MNIST training set held out for validation
    digits: DigitSource = DigitSource.AUTO

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 1 <= self.num_colors <= len(PALETTE):
            raise UserError(f"dm.num_colors={self.num_colors} must be between 1 and {len(PALETTE)}.")
        for color in self.colors or []:
            if not 0 <= color < self.num_colors:
                raise UserError(f"dm.colors has {color}, which is not a palette entry: use 0 to {self.num_colors - 1}.")
        if self.colors is not None and (not self.colors or len(set(self.colors)) != len(self.colors)):
            raise UserError(f"dm.colors={self.colors} must list distinct palette entries.")
        if not 0 <= self.correlation <= 1:
            raise UserError(f"dm.correlation={self.correlation} must be between 0 and 1.")
        if not 0 < self.val_prop < 1:
            raise UserError(f"dm.val_prop={self.val_prop} must be strictly between 0 and 1.")
        if self.label_map is not None:
            if not set(self.label_map) <= set(range(10)):
                raise UserError(f"dm.label_map={self.label_map} must map digits 0-9 to labels.")
            labels = set(self.label_map.values())
            if labels != set(range(len(labels))):
                raise UserError(f"dm.label_map={self.label_map} must map to the labels 0 to {len(labels) - 1}.")
            if len(labels) < 2:
                how_many = "one label" if labels else "no label"
                raise UserError(f"dm.label_map={self.label_map} maps to {how_many}: a classifier needs two or more.")

    @override
    def build(self, *, seed: int) -> Data:
        import torch

        from src.datasets.cache import cache_key, load_or_build

        mnist_files = self._find_mnist()
        source = "synthetic" if mnist_files is None else "mnist"
        # Everything that changes the tensors names the cache file: these settings, the seed (split and
        # colours), the MNIST files' sizes and times, and the version of this preparation.
        names = ("default_res", "label_map", "colors", "num_colors", "correlation", "val_prop")
        settings = {name: getattr(self, name) for name in names} | {"seed": seed, "format": CACHE_FORMAT}
        settings["files"] = [(file.stat().st_size, file.stat().st_mtime_ns) for file in mnist_files or []]
        path = self.root / "cache" / f"cmnist-{source}-{cache_key(settings)}.tensors"
        # Small enough to prepare in memory and copy into the cache: `empty`, to write in place, is not needed.
        prepared = load_or_build(path, lambda empty: self._prepare(source, seed))
        tensors = prepared.tensors
        group_colors = torch.tensor([PALETTE[name] for name in self._color_names()]) / 255
        splits = {
            name: TintedSplit(
                images=tensors[f"{name}_images"],
                labels=tensors[f"{name}_labels"],
                groups=tensors[f"{name}_groups"],
                group_colors=group_colors,
            )
            for name in ("train", "val", "test")
        }
        for name, split in splits.items():
            if not len(split):  # refused now, not after an epoch of training
                raise UserError(
                    f"the {name} split has no digits (dm.val_prop={self.val_prop}, dm.label_map={self.label_map}); "
                    "choose a dm.val_prop that leaves digits for both training and validation."
                )
        num_classes = 10 if self.label_map is None else len(set(self.label_map.values()))
        return Data(
            **splits,
            num_classes=num_classes,
            group_names=self._color_names(),
            source=source,
            # Synthetic digits are made by this code, from the seed: their origin is the code, which results record.
            origin="synthetic" if mnist_files is None else hash_files(mnist_files),
            prepared_fingerprint=prepared.fingerprint,
        )

    @override
    def memory_needed(self) -> int:
        from src.datasets.digits import count_mnist

        count = None if self.digits is DigitSource.SYNTHETIC else count_mnist(self.root)
        # grey uint8 images, int64 labels and groups
        return (count or TRAIN_DIGITS + TEST_DIGITS) * (self.default_res**2 + 16)

    def _find_mnist(self) -> list[Path] | None:
        """MNIST's files, or None where synthetic digits are asked for or MNIST is unavailable (with a warning)."""
        from src.datasets.digits import MnistUnavailableError, ensure_mnist

        if self.digits is DigitSource.SYNTHETIC:
            return None
        try:
            return ensure_mnist(self.root, download=self.download)
        except MnistUnavailableError as error:
            if self.digits is DigitSource.MNIST:
                raise UserError(
                    f"dm.digits=MNIST, but {error}. Put the four MNIST files there, or set dm.root to where they are."
                ) from None
            log.warning(f"{error}; using SYNTHETIC digits instead (dm.digits=MNIST forbids this).")
            return None

    def _color_names(self) -> list[str]:
        palette = list(PALETTE)[: self.num_colors]
        return [palette[i] for i in self.colors or range(self.num_colors)]

    def _prepare(self, source: str, seed: int) -> dict[str, Tensor]:
        """Load, resize and split the digits, and choose their colours: the tensors that the cache keeps.
        The images stay grey, (N, 1, H, W)."""
        import torch

        from src.datasets.digits import load_mnist, resize_digits, synthetic_digits

        generator = torch.Generator().manual_seed(seed)
        if source == "mnist":
            (train_images, train_digits), (test_images, test_digits) = load_mnist(self.root)
        else:  # as many digits as MNIST has, so that results are comparable in scale
            train_images, train_digits = synthetic_digits(TRAIN_DIGITS, generator=generator)
            test_images, test_digits = synthetic_digits(TEST_DIGITS, generator=generator)
        if self.default_res != train_images.shape[-1]:
            train_images = resize_digits(train_images, self.default_res)
            test_images = resize_digits(test_images, self.default_res)
        color_names = self._color_names()
        to_label = torch.arange(10) if self.label_map is None else torch.full((10,), -1)
        for digit, label in (self.label_map or {}).items():
            to_label[digit] = label

        def split(name: str, images: Tensor, digits: Tensor, correlation: float) -> dict[str, Tensor]:
            labels = to_label[digits]
            keep = labels >= 0  # digits missing from `label_map` are dropped
            images, labels = images[keep], labels[keep]
            colors = torch.randint(len(color_names), labels.shape, generator=generator)
            tied = torch.rand(labels.shape, generator=generator) < correlation
            colors = torch.where(tied, labels % len(color_names), colors)
            return {f"{name}_images": images.unsqueeze(1), f"{name}_labels": labels, f"{name}_groups": colors}

        order = torch.randperm(len(train_digits), generator=generator)
        num_val = round(len(order) * self.val_prop)
        val, train = order[:num_val], order[num_val:]
        return (
            split("train", train_images[train], train_digits[train], self.correlation)
            | split("val", train_images[val], train_digits[val], 0.0)
            | split("test", test_images, test_digits, 0.0)
        )
