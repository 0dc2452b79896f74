"""Where CMNIST's digits come from: real MNIST through torchvision, or rendered synthetic digits."""

import contextlib
import gzip
import io
import shutil
import zlib
from contextlib import AbstractContextManager
from pathlib import Path
from urllib.error import URLError

import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor

from src.common.errors import UserError
from src.common.files import exclusive_lock, write_atomically
from src.common.paths import shown

__all__ = ["MnistUnavailableError", "count_mnist", "ensure_mnist", "load_mnist", "resize_digits", "synthetic_digits"]

# The four files that torchvision's MNIST reads from ROOT/MNIST/raw.
MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
SIDE = 28  # MNIST's image side; synthetic digits match it
CHUNK = 8192  # images transformed at once, to bound memory
Digits = tuple[Tensor, Tensor]  # images, uint8 (N, 28, 28), and labels, int64 (N,)


class MnistUnavailableError(Exception):
    """MNIST is neither on disk nor downloadable; the message says why."""


def ensure_mnist(root: Path, *, download: bool) -> list[Path]:
    """The four MNIST files in ROOT/MNIST/raw: extracted from their `.gz` archives there, or downloaded
    first if the archives are missing too and downloading is allowed."""
    raw = root / "MNIST" / "raw"
    files = [raw / name for name in MNIST_FILES]
    if not download and not raw.is_dir():
        raise MnistUnavailableError(f"there are no MNIST files in {shown(raw)} and dm.download=false")
    # Under a lock, so that runs started together extract or download the files once, and none of them
    # reads a file that another is still writing.
    try:
        lock: AbstractContextManager[object] = exclusive_lock(root / "MNIST" / "download.lock")
    except OSError:  # a data folder we cannot write to: nothing will be written into it either
        lock = contextlib.nullcontext()
    with lock:
        if all(file.is_file() for file in files):
            return files
        archives = [file.with_name(f"{file.name}.gz") for file in files]
        if all(archive.is_file() for archive in archives):
            for archive, file in zip(archives, files, strict=True):
                _extract(archive, file)
            return files
        if not download:
            raise MnistUnavailableError(f"there are no MNIST files in {shown(raw)} and dm.download=false")
        # Imported only here and in `load_mnist`: a run that reads its data from the cache skips torchvision.
        from torchvision.datasets import MNIST

        try:
            with contextlib.redirect_stdout(io.StringIO()):  # torchvision prints every download attempt
                MNIST(str(root), download=True)
        except (RuntimeError, URLError, OSError) as error:
            reason = str(error).strip().splitlines()[-1]
            raise MnistUnavailableError(
                f"there are no MNIST files in {shown(raw)} and the download failed: {reason}"
            ) from None
    return files


def count_mnist(root: Path) -> int | None:
    """The number of digits in ROOT/MNIST/raw, from the label files' headers; None where they are missing."""
    count = 0
    for name in MNIST_FILES[1::2]:  # the label files: magic number, then the count, big-endian
        try:
            with (root / "MNIST" / "raw" / name).open("rb") as file:
                count += int.from_bytes(file.read(8)[4:], "big")
        except OSError:
            return None
    return count


def _extract(archive: Path, file: Path) -> None:
    """Decompress an MNIST archive; gzip's checksum tells a damaged one."""
    try:
        with gzip.open(archive) as source:
            write_atomically(file, lambda target: shutil.copyfileobj(source, target))
    except (OSError, EOFError, zlib.error) as error:
        raise UserError(
            f"the MNIST archive {shown(archive)} is damaged ({error}); delete it, and the next run downloads it again."
        ) from None


def load_mnist(root: Path) -> tuple[Digits, Digits]:
    """The MNIST training and test sets from ROOT/MNIST/raw (see `ensure_mnist`), checked."""
    from torchvision.datasets import MNIST

    raw = root / "MNIST" / "raw"
    try:
        train, test = MNIST(str(root), train=True), MNIST(str(root), train=False)
    except (RuntimeError, OSError, AssertionError, ValueError, TypeError, KeyError, IndexError) as error:
        raise UserError(
            f"the MNIST files in {shown(raw)} are unreadable ({error}); delete them and run again."
        ) from None
    for name, dataset in (("train", train), ("t10k", test)):
        images, labels = dataset.data, dataset.targets
        image_file, label_file = f"{name}-images-idx3-ubyte", f"{name}-labels-idx1-ubyte"
        problem = None
        if images.shape[1:] != (SIDE, SIDE):
            problem = f"{image_file} holds images of {images.shape[1]}x{images.shape[2]} pixels, not 28x28"
        elif len(images) != len(labels):
            problem = f"{image_file} holds {len(images)} images, but {label_file} {len(labels)} labels"
        elif len(labels) and not 0 <= int(labels.min()) <= int(labels.max()) <= 9:
            problem = f"{label_file} holds labels from {int(labels.min())} to {int(labels.max())}, not 0 to 9"
        if problem:
            raise UserError(f"the MNIST files in {shown(raw)} are not MNIST: {problem}; delete them and run again.")
    return (train.data, train.targets), (test.data, test.targets)


def synthetic_digits(num: int, *, generator: torch.Generator) -> Digits:
    """`num` digits rendered from a font, each under its own random affine distortion."""
    glyphs = _glyphs()
    labels = torch.randint(10, (num,), generator=generator)
    styles = torch.randint(len(glyphs), (num,), generator=generator)

    def uniform(low: float, high: float) -> Tensor:
        return low + (high - low) * torch.rand(num, generator=generator)

    angle, scale, shear = uniform(-0.3, 0.3), uniform(0.85, 1.2), uniform(-0.3, 0.3)
    # affine_grid maps output to input coordinates, so scale > 1 makes the digit smaller.
    theta = torch.stack(
        [
            torch.stack([scale * angle.cos(), -scale * angle.sin() + shear, uniform(-0.12, 0.12)], 1),
            torch.stack([scale * angle.sin(), scale * angle.cos(), uniform(-0.12, 0.12)], 1),
        ],
        1,
    )
    images = torch.empty((num, SIDE, SIDE), dtype=torch.uint8)
    for start in range(0, num, CHUNK):
        chunk = slice(start, start + CHUNK)
        source = glyphs[styles[chunk], labels[chunk]].unsqueeze(1)
        grid = F.affine_grid(theta[chunk], list(source.shape), align_corners=False)
        warped = F.grid_sample(source, grid, align_corners=False)
        images[chunk] = (warped.squeeze(1) * 255).round().to(torch.uint8)
    return images, labels


def resize_digits(images: Tensor, side: int) -> Tensor:
    """Resize (N, H, W) uint8 images to (N, side, side), a chunk at a time to bound memory."""
    resized = torch.empty((len(images), side, side), dtype=torch.uint8)
    for start in range(0, len(images), CHUNK):
        chunk = slice(start, start + CHUNK)
        scaled = F.interpolate(images[chunk].unsqueeze(1).float(), size=(side, side), mode="bilinear", antialias=True)
        resized[chunk] = scaled.squeeze(1).round().clamp(0, 255).to(torch.uint8)
    return resized


def _glyphs() -> Tensor:
    """The ten digits in three stroke widths, (3, 10, 28, 28) floats, centred like MNIST's."""
    font = ImageFont.load_default(size=64)
    styles: list[Tensor] = []
    for stroke in (0, 3, 6):
        digits: list[Tensor] = []
        for digit in range(10):
            canvas = Image.new("L", (128, 128))
            ImageDraw.Draw(canvas).text(
                (64, 64), str(digit), fill=255, font=font, anchor="mm", stroke_width=stroke, stroke_fill=255
            )
            glyph = canvas.crop(canvas.getbbox())
            # MNIST fits each digit into a 20x20 box in the middle of the 28x28 image.
            glyph.thumbnail((20, 20), Image.Resampling.LANCZOS)
            framed = Image.new("L", (SIDE, SIDE))
            framed.paste(glyph, ((SIDE - glyph.width) // 2, (SIDE - glyph.height) // 2))
            digits.append(torch.frombuffer(bytearray(framed.tobytes()), dtype=torch.uint8).view(SIDE, SIDE))
        styles.append(torch.stack(digits))
    return torch.stack(styles).float() / 255
