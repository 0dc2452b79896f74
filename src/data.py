"""The data module interface: a config dataclass whose `build()` loads the data as tensors."""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Self

from omegaconf import II

from src.common.errors import UserError
from src.common.paths import user_path

if TYPE_CHECKING:
    import torch
    from torch import Tensor

__all__ = ["Data", "DataModule", "Split", "check_seed", "hash_files"]

# Images copied to a GPU at a time by `Split.to`: a few MB of host memory, not a copy of the split.
GATHER_ROWS = 4096


@dataclass(frozen=True, kw_only=True)
class Split:
    """One split of a data set, held whole in memory (or memory-mapped from the cache); batches are formed
    by indexing.

    The images may be shared with the other splits: `rows` then picks this split's, so that no split holds a
    copy (CelebA's splits are index lists over the cache of all its images). A data module whose images need
    work as each batch is formed (CMNIST colours its grey digits) subclasses it and overrides `batch()` and
    `image_shape`.
    """

    images: Tensor  # uint8, (M, C, H, W): four times smaller than float until a batch is formed
    labels: Tensor  # int64, (N,): the class to predict
    groups: Tensor  # int64, (N,): the subgroup (a colour, an attribute) for fairness metrics
    rows: Tensor | None = None  # int64, (N,): the rows of `images` that this split is made of; None: all of them

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """The shape of one image as the model sees it: (channels, height, width)."""
        channels, height, width = self.images.shape[1:]
        return channels, height, width

    def batch(self, index: Tensor | slice) -> Tensor:
        """The images at `index` (of this split) as the model sees them: float, in [0, 1]."""
        rows = index if self.rows is None else self.rows[index]
        return self.images[rows].float().div_(255)

    def to(self, device: torch.device) -> Self:
        """This split on `device`. Where it is there already, the same split: on the CPU, the images stay in the
        memory-mapped cache that the processes of a node share. Elsewhere (a GPU), its own images only,
        gathered a chunk at a time, so that the host makes no copy of them all."""
        import torch

        if self.images.device == device:
            return self
        images = torch.empty((len(self), *self.images.shape[1:]), dtype=self.images.dtype, device=device)
        for start in range(0, len(self), GATHER_ROWS):
            chunk = slice(start, start + GATHER_ROWS)
            images[chunk] = self.images[chunk if self.rows is None else self.rows[chunk]]
        others = {
            field.name: getattr(self, field.name) for field in fields(self) if field.name not in ("images", "rows")
        }
        return replace(self, images=images, rows=None, **{name: tensor.to(device) for name, tensor in others.items()})


@dataclass(frozen=True)
class Data:
    """Everything the training loop needs to know about the data."""

    train: Split
    val: Split
    test: Split
    num_classes: int
    group_names: list[str]  # the name of each subgroup index, used in metric names
    source: str  # where the images came from, recorded with the results
    # What the data set was made from, the same whatever the seed: a hash of the files it was read from
    # (`hash_files()`), or how it was made. Results of another origin are never pooled with these.
    origin: str
    # The fingerprint of the prepared tensors that the splits' images are taken from, where it is known
    # without reading them (the cache stores it: see `load_or_build`); None: `fingerprint()` hashes the images.
    prepared_fingerprint: str | None = None

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return self.train.image_shape

    def fingerprint(self) -> str:
        """A hash of every tensor of every split: the same data, wherever it was read from, has the same one.
        The images count by `prepared_fingerprint` where it is known: a run does not read all of its data to
        know which data it is (the rest, labels and index lists, takes milliseconds)."""
        import torch

        digest = hashlib.sha256(f"{self.source} {self.num_classes} {self.group_names}".encode())
        digest.update(f"prepared {self.prepared_fingerprint}".encode())
        for split in (self.train, self.val, self.test):
            for field in fields(split):
                tensor: Tensor | None = getattr(split, field.name)
                if tensor is None:
                    continue
                digest.update(f"{field.name} {tensor.dtype} {list(tensor.shape)}".encode())
                if field.name != "images" or self.prepared_fingerprint is None:
                    digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().data)
        return digest.hexdigest()


@dataclass(eq=False, kw_only=True)
class DataModule(ABC):
    """Interface for data modules; the fields shared by all of them."""

    # An interpolation, resolved when the config is used: $HYDRA_EXAMPLE_DATA if set, else ./data.
    root: Path = II("oc.env:HYDRA_EXAMPLE_DATA,data")  # noqa: RUF009 (a constant string)
    download: bool = True  # fetch missing files (the data set's own downloader)
    default_res: int = 28  # side length of the square images fed to the model

    def __post_init__(self) -> None:
        # `~` and relative paths mean what they mean where the program was started, even with hydra.job.chdir=True.
        self.root = user_path(self.root, "dm.root")
        if self.default_res < 1:
            raise UserError(f"dm.default_res={self.default_res} must be 1 or more.")

    @abstractmethod
    def build(self, *, seed: int) -> Data:
        """Load the data; `seed` fixes every random choice (splits, colours)."""

    def memory_needed(self) -> int:
        """The bytes that the prepared data takes in memory, known before it is prepared: a run that would
        not fit is refused before it prepares anything. 0 (not known) unless a data module says."""
        return 0

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """The shape of one image as the model sees it, known before the data is prepared: colour images
        of `default_res` pixels (a data module of other images overrides this)."""
        return 3, self.default_res, self.default_res


def hash_files(files: Iterable[Path]) -> str:
    """A hash of the contents of `files`, in order: the same files, wherever they are, give the same one."""
    digest = hashlib.sha256()
    for path in files:
        with path.open("rb") as file:
            while chunk := file.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()[:16]


def check_seed(key: str, seed: int) -> None:
    """Refuse a seed that torch's generators do not take (they take 64 bits, signed or not)."""
    if not -(2**63) <= seed < 2**64:
        raise UserError(f"{key}={seed} is not a seed torch can use: use an integer from 0 to 2**64 - 1.")
