"""A full-size CelebA folder, fabricated in seconds: CelebA's licence forbids copies of the real one.

It has what `dm=celeba` reads, in the real formats and at the real size: 202,599 JPEGs of 178x218 pixels
in `img_align_celeba/`, named 000001.jpg to 202599.jpg; `list_attr_celeba.txt` (the count, the 40 column
names, then a row of -1 and 1 per image, with CRLF line endings); and `list_eval_partition.txt` with the
official partition: the first 162,770 images train, the next 19,867 validate, the last 19,962 test.
A few thousand distinct images (smooth colour fields with noise, about as costly to decode as faces, of
about the size of CelebA's JPEGs) are hard-linked to the 202,599 names: each name is a file to open and
decode, and the folder takes tens of MB instead of 1.4 GB.

    .venv/bin/python benchmarks/fabricate_celeba.py ROOT [--distinct 2000]

writes ROOT/celeba/; use it with `dm=celeba dm.root=ROOT` (or HYDRA_EXAMPLE_DATA=ROOT).
"""

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from common import REPO

sys.path.insert(0, str(REPO))  # the project's `src` package, when run as `python benchmarks/...`

from src.datasets.celeba import CELEBA_IMAGES, CelebAttr

SPLITS = (162_770, 19_867, 19_962)  # the official partition: train, validation, test
WIDTH, HEIGHT = 178, 218  # the aligned images' size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", type=Path, help="the data root to create ROOT/celeba in")
    parser.add_argument("--distinct", type=int, default=2000, help="distinct images (default: 2000)")
    args = parser.parse_args()
    start = time.perf_counter()
    fabricate(args.root, distinct=args.distinct)
    print(f"Fabricated {CELEBA_IMAGES:,} images in {args.root / 'celeba'} in {time.perf_counter() - start:.1f} s.")


def fabricate(root: Path, *, distinct: int) -> None:
    """Write ROOT/celeba as described above; refuse a folder that exists (nothing is overwritten)."""
    folder = root / "celeba"
    image_dir = folder / "img_align_celeba"
    image_dir.mkdir(parents=True)  # raises FileExistsError where a CelebA folder is already
    rng = np.random.default_rng(0)
    names = [f"{index + 1:06d}.jpg" for index in range(CELEBA_IMAGES)]
    for name in names[:distinct]:
        _image(rng).save(image_dir / name, quality=90)
    for index, name in enumerate(names[distinct:], start=distinct):
        os.link(image_dir / names[index % distinct], image_dir / name)

    columns = [attribute.value for attribute in CelebAttr]  # iterating an Enum skips the alias BLOND
    attributes = rng.random((CELEBA_IMAGES, len(columns))) < 0.5
    # Each value right-aligned in two characters after a space, as CelebA writes them: " -1" or "  1".
    values = np.where(attributes, b"  1", b" -1").view(f"S{3 * len(columns)}").ravel()
    rows = [name.encode() + row for name, row in zip(names, values.tolist(), strict=True)]
    _write_lines(
        folder / "list_attr_celeba.txt", [str(CELEBA_IMAGES).encode(), " ".join(columns).encode() + b" ", *rows]
    )
    splits = np.repeat(np.arange(len(SPLITS)), SPLITS)
    _write_lines(
        folder / "list_eval_partition.txt",
        [f"{name} {split}".encode() for name, split in zip(names, splits, strict=True)],
    )


def _image(rng: np.random.Generator) -> Image.Image:
    """Smooth colour fields with fine noise: JPEG finds about as much to encode and decode as in a face."""
    coarse = Image.fromarray(rng.integers(0, 256, (9, 8, 3), dtype=np.uint8)).resize(
        (WIDTH, HEIGHT), Image.Resampling.BICUBIC
    )
    noise = rng.normal(0, 6, (HEIGHT, WIDTH, 3))
    return Image.fromarray(np.clip(np.asarray(coarse) + noise, 0, 255).astype(np.uint8))


def _write_lines(path: Path, lines: list[bytes]) -> None:
    """CRLF line endings, as in the official files."""
    path.write_bytes(b"".join(line + b"\r\n" for line in lines))


if __name__ == "__main__":
    main()
