"""CelebA's files as torchvision lays them out, read and checked here, and a cache of the resized images."""

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from tqdm import tqdm

from src.common.errors import UserError
from src.datasets.cache import cache_key, load_or_build

__all__ = ["CelebAFiles", "load_celeba"]

log = logging.getLogger(__name__)

# torchvision's layout: ROOT/celeba/ holds these (and three files this project does not need).
FOLDER = "celeba"
IMAGE_DIR = "img_align_celeba"
ATTR_FILE = "list_attr_celeba.txt"
PARTITION_FILE = "list_eval_partition.txt"
FIRST_ROW = 3  # the line of the first image in ATTR_FILE, after the count line and the header
CHUNK = 256  # images decoded per task of the thread pool
# Part of the cache key: bump it when the preprocessing changes, so that no old cache is read.
CACHE_FORMAT = 1
HOW_TO_GET = (
    f"download Img/img_align_celeba.zip (unzip it there), Anno/{ATTR_FILE} and Eval/{PARTITION_FILE} "
    "from https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html, or set dm.root to the folder above an existing celeba/"
)


@dataclass(frozen=True)
class CelebAFiles:
    """All of CelebA, in the order of the attribute file."""

    images: Tensor  # uint8, (N, 3, res, res): centre-cropped to a square, then resized
    attributes: Tensor  # bool, (N, 40): True where the attribute file says 1, columns in its order
    partition: Tensor  # uint8, (N,): 0 train, 1 validation, 2 test, as in the partition file


def load_celeba(root: Path, *, res: int, download: bool, attribute_names: list[str]) -> CelebAFiles:
    """CelebA at `res` pixels, decoded once and then read from the cache in ROOT/cache."""
    folder = root / FOLDER
    _ensure_present(root, download=download)
    # The key: the resolution, the preprocessing and the two text files. The images are not fingerprinted:
    # listing 200,000 files on every run would cost more than it saves, and the attribute file names them.
    stats = [(folder / name).stat() for name in (ATTR_FILE, PARTITION_FILE)]
    settings = {"res": res, "format": CACHE_FORMAT, "files": [(stat.st_size, stat.st_mtime_ns) for stat in stats]}

    def decode() -> dict[str, Tensor]:
        names, attributes = _read_attributes(folder / ATTR_FILE, attribute_names)
        partition = _read_partition(folder / PARTITION_FILE, names)
        log.info(f"Decoding {len(names)} CelebA images to {res}x{res} px, once: later runs read them from a cache.")
        return {"images": _decode(folder / IMAGE_DIR, names, res), "attributes": attributes, "partition": partition}

    tensors = load_or_build(root / "cache" / f"celeba-{res}px-{cache_key(settings)}.pt", decode)
    return CelebAFiles(images=tensors["images"], attributes=tensors["attributes"], partition=tensors["partition"])


def _ensure_present(root: Path, *, download: bool) -> None:
    """Download CelebA with torchvision if files are missing and `download` allows it."""
    folder = root / FOLDER
    missing = [name for name in (f"{IMAGE_DIR}/", ATTR_FILE, PARTITION_FILE) if not (folder / name).exists()]
    if not missing:
        return
    what = f"CelebA is incomplete in {folder} (missing: {', '.join(missing)})"
    if not download:
        raise UserError(f"{what} and dm.download=false: {HOW_TO_GET}.")
    from torchvision.datasets import CelebA

    try:
        CelebA(str(root), split="all", download=True)
    except Exception as error:  # gdown, requests and Google Drive fail in many ways, all alike to the user
        reason = " ".join(str(error).split())
        raise UserError(
            f"{what} and the download failed ({reason}). It needs the package gdown and Google Drive's goodwill "
            f"(Drive often refuses with a quota error); else {HOW_TO_GET}."
        ) from None


def _lines(path: Path) -> list[str]:
    """The lines of a text file, numbered as an editor numbers them (from 1, at each newline)."""
    # Undecodable bytes become U+FFFD, which the line checks then report with the line number.
    lines = path.read_text(encoding="ascii", errors="replace").split("\n")
    return lines[:-1] if lines[-1] == "" else lines


def _read_attributes(path: Path, attribute_names: list[str]) -> tuple[list[str], Tensor]:
    """The image names and their attributes, checked against the count line and the header."""
    lines = _lines(path)
    count = lines[0].strip() if lines else ""
    if not count.isdigit():
        raise UserError(f"{path}:1: expected the number of images, found {count[:60]!r}; {HOW_TO_GET}.")
    header = lines[1] if len(lines) > 1 else ""
    if header.split() != attribute_names:
        raise UserError(
            f"{path}:2: expected the {len(attribute_names)} attribute names, {attribute_names[0]} to "
            f"{attribute_names[-1]}, found {header[:60]!r}; {HOW_TO_GET}."
        )
    names: list[str] = []
    rows: list[list[bool]] = []
    for number, line in enumerate(lines[FIRST_ROW - 1 :], start=FIRST_ROW):
        fields = line.split()
        values = fields[1:]
        if len(values) != len(attribute_names) or not {"-1", "1"}.issuperset(values):
            raise UserError(
                f"{path}:{number}: expected an image name and {len(attribute_names)} values of -1 or 1, "
                f"found {line[:60]!r}; {HOW_TO_GET}."
            )
        names.append(fields[0])
        rows.append([value == "1" for value in values])
    if len(names) != int(count):
        raise UserError(
            f"{path}:1: announces {int(count)} images, but {len(names)} follow: the file is damaged; {HOW_TO_GET}."
        )
    return names, torch.tensor(rows, dtype=torch.bool).view(len(names), len(attribute_names))


def _read_partition(path: Path, names: list[str]) -> Tensor:
    """The split of each image in `names`, from the partition file."""
    split_of: dict[str, int] = {}
    for number, line in enumerate(_lines(path), start=1):
        fields = line.split()
        if len(fields) != 2 or fields[1] not in {"0", "1", "2"}:
            raise UserError(
                f"{path}:{number}: expected an image name and 0 (train), 1 (validation) or 2 (test), "
                f"found {line[:60]!r}; {HOW_TO_GET}."
            )
        split_of[fields[0]] = int(fields[1])
    for index, name in enumerate(names):
        if name not in split_of:
            raise UserError(f"{path} has no line for {name} ({ATTR_FILE}:{index + FIRST_ROW}); {HOW_TO_GET}.")
    partition = torch.tensor([split_of[name] for name in names], dtype=torch.uint8)
    for split, split_name in enumerate(("training", "validation", "test")):
        if not (partition == split).any():
            raise UserError(f"{path} puts none of the images of {ATTR_FILE} in the {split_name} split; {HOW_TO_GET}.")
    return partition


def _decode(image_dir: Path, names: list[str], res: int) -> Tensor:
    """Decode the images, crop the centre square and resize it to `res` pixels, in several threads."""
    present = {entry.name for entry in image_dir.iterdir()}  # one listing instead of a check per image
    for index, name in enumerate(names):
        if name not in present:
            raise UserError(f"{image_dir / name} is missing ({ATTR_FILE}:{index + FIRST_ROW} lists it); {HOW_TO_GET}.")
    # Filled in place by the threads; numpy, because per-image tensor copies would each start torch's threads.
    images = np.empty((len(names), 3, res, res), dtype=np.uint8)

    def decode(indices: range) -> int:
        for index in indices:
            path = image_dir / names[index]
            try:
                with Image.open(path) as image:
                    # JPEG can decode at 1/2, 1/4 or 1/8 of the size: much faster, if that still covers `res`.
                    image.draft("RGB", (res, res))
                    side = min(image.size)
                    left, top = (image.width - side) // 2, (image.height - side) // 2
                    square = (left, top, left + side, top + side)
                    resized = image.convert("RGB").resize((res, res), Image.Resampling.BILINEAR, box=square)
            except (OSError, SyntaxError) as error:  # Pillow's errors for unreadable and truncated files
                raise UserError(
                    f"{path} ({ATTR_FILE}:{index + FIRST_ROW}) is not a readable image ({error}); {HOW_TO_GET}."
                ) from None
            images[index] = np.asarray(resized).transpose(2, 0, 1)
        return len(indices)

    chunks = [range(start, min(start + CHUNK, len(names))) for start in range(0, len(names), CHUNK)]
    pool = ThreadPoolExecutor()  # Pillow releases the GIL while it decodes and resizes
    try:
        with tqdm(total=len(names), desc="Decoding CelebA", unit="img", disable=None) as bar:
            for done in pool.map(decode, chunks):
                bar.update(done)
    finally:
        pool.shutdown(cancel_futures=True)  # after an unreadable image, the rest are not decoded
    return torch.as_tensor(images)  # shares the memory: no copy
