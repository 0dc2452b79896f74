"""Tiny CelebA folders in the real file formats: CelebA's licence forbids shipping the real one.

Each image is one flat colour that encodes what was written for it: red whether it shows SMILING,
green whether it shows MALE (so both can be learnt), blue its index (so a test can tell which file
a decoded image came from). Black bands above and below, 20 rows each, are what the centre crop of
a 178x218 image removes. Only the files that the data module reads are written."""

from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from torch import Tensor

from src.datasets.celeba import CelebAttr

__all__ = ["FakeCelebA", "image_indices", "write_attribute_file", "write_celeba", "write_lines"]

COLUMNS = [attribute.value for attribute in CelebAttr]  # the 40 columns, in the official order
WIDTH, HEIGHT, BAND = 178, 218, 20
LOW, HIGH = 60, 200  # the red and green levels for an attribute that is absent or present
SPLIT_PATTERN = (0, 0, 0, 0, 1, 2)  # two thirds train, a sixth validation, a sixth test, interleaved


@dataclass(frozen=True)
class FakeCelebA:
    """What was written: the data root, and the attributes and partition in file order."""

    root: Path
    attributes: Tensor  # bool, (N, 40)
    partition: Tensor  # int64, (N,)

    @property
    def folder(self) -> Path:
        return self.root / "celeba"

    def column(self, attribute: CelebAttr) -> Tensor:
        """A view: writing to it changes `attributes`."""
        return self.attributes[:, COLUMNS.index(attribute.value)]

    def image_name(self, index: int) -> str:
        return f"{index + 1:06d}.jpg"


def write_celeba(root: Path, *, num_images: int = 48, seed: int = 0) -> FakeCelebA:
    """Write `num_images` (at most 48) images and the two text files under `root`/celeba, as CelebA has them."""
    generator = torch.Generator().manual_seed(seed)
    attributes = torch.rand((num_images, len(COLUMNS)), generator=generator) < 0.5
    index = torch.arange(num_images)
    # Every split gets all four combinations of SMILING and MALE (given 24 images or more).
    partition = torch.tensor(SPLIT_PATTERN).repeat(num_images // len(SPLIT_PATTERN) + 1)[:num_images]
    fake = FakeCelebA(root=root, attributes=attributes, partition=partition)
    fake.column(CelebAttr.SMILING)[:] = (index // 6) % 2 == 1
    fake.column(CelebAttr.MALE)[:] = (index // 12) % 2 == 1

    image_dir = fake.folder / "img_align_celeba"
    image_dir.mkdir(parents=True)
    for i in range(num_images):
        red = HIGH if fake.column(CelebAttr.SMILING)[i] else LOW
        green = HIGH if fake.column(CelebAttr.MALE)[i] else LOW
        image = Image.new("RGB", (WIDTH, HEIGHT))
        image.paste((red, green, blue_of(i)), (0, BAND, WIDTH, HEIGHT - BAND))
        image.save(image_dir / fake.image_name(i), quality=90)

    write_attribute_file(fake)
    partition_lines = [f"{fake.image_name(i)} {int(partition[i])}" for i in range(num_images)]
    write_lines(fake.folder / "list_eval_partition.txt", partition_lines)
    return fake


def write_attribute_file(fake: FakeCelebA) -> None:
    """Write `fake.attributes` as CelebA does: a count line, a header with a trailing space, and
    values of -1 and 1, each right-aligned in two characters after a space."""
    lines = [str(len(fake.attributes)), " ".join(COLUMNS) + " "]
    for i, row in enumerate(fake.attributes):
        lines.append(fake.image_name(i) + "".join(f" {1 if value else -1:2d}" for value in row))
    write_lines(fake.folder / "list_attr_celeba.txt", lines)


def write_lines(path: Path, lines: list[str]) -> None:
    """Write a text file with CRLF line endings, as the official files have them."""
    path.write_bytes("".join(f"{line}\r\n" for line in lines).encode())


def blue_of(index: int) -> int:
    return 10 + 5 * index


def image_indices(images: Tensor) -> Tensor:
    """The index of the file each decoded image came from, read from the blue of its centre."""
    side = images.shape[-1]
    centre = images[:, 2, side // 4 : side - side // 4, side // 4 : side - side // 4].float().mean((1, 2))
    return ((centre - blue_of(0)) / (blue_of(1) - blue_of(0))).round().long()
