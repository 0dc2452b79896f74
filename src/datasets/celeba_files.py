"""CelebA's files as torchvision lays them out, read and checked here, and a cache of the resized images."""

import logging
import multiprocessing
import signal
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from src.common.errors import UserError
from src.datasets.cache import cache_key, load_or_build
from src.datasets.tensor_file import Empty

__all__ = ["CelebAFiles", "load_celeba"]

log = logging.getLogger(__name__)

# torchvision's layout: ROOT/celeba/ holds these (and three files this project does not need).
FOLDER = "celeba"
IMAGE_DIR = "img_align_celeba"
ATTR_FILE = "list_attr_celeba.txt"
PARTITION_FILE = "list_eval_partition.txt"
FIRST_ROW = 3  # the line of the first image in ATTR_FILE, after the count line and the header
CHUNK = 256  # images decoded per task of a worker process
PROGRESS_S = 15.0  # seconds between two lines of progress while decoding
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
    fingerprint: str  # of the three tensors, computed when the cache was written


def load_celeba(root: Path, *, res: int, download: bool, attribute_names: list[str]) -> CelebAFiles:
    """CelebA at `res` pixels, decoded once and then read from the cache in ROOT/cache."""
    folder = root / FOLDER
    _ensure_present(root, download=download)
    # The key: the resolution, the preprocessing and the two text files. The images are not fingerprinted:
    # listing 200,000 files on every run would cost more than it saves, and the attribute file names them.
    stats = [(folder / name).stat() for name in (ATTR_FILE, PARTITION_FILE)]
    settings = {"res": res, "format": CACHE_FORMAT, "files": [(stat.st_size, stat.st_mtime_ns) for stat in stats]}

    def prepare(empty: Empty) -> dict[str, Tensor]:
        names, attributes = _read_attributes(folder / ATTR_FILE, attribute_names)
        partition = _read_partition(folder / PARTITION_FILE, names)
        images = empty((len(names), 3, res, res), torch.uint8)  # in the cache file: no copy in memory
        _decode(folder / IMAGE_DIR, names, images)
        return {"images": images, "attributes": attributes, "partition": partition}

    prepared = load_or_build(root / "cache" / f"celeba-{res}px-{cache_key(settings)}.tensors", prepare)
    tensors = prepared.tensors
    return CelebAFiles(
        images=tensors["images"],
        attributes=tensors["attributes"],
        partition=tensors["partition"],
        fingerprint=prepared.fingerprint,
    )


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
    rows: list[str] = []  # each row's values without the spaces, such as "-11-1...": read all at once below
    for number, line in enumerate(lines[FIRST_ROW - 1 :], start=FIRST_ROW):
        fields = line.split()
        values = fields[1:]
        if len(values) != len(attribute_names) or not {"-1", "1"}.issuperset(values):
            raise UserError(
                f"{path}:{number}: expected an image name and {len(attribute_names)} values of -1 or 1, "
                f"found {line[:60]!r}; {HOW_TO_GET}."
            )
        names.append(fields[0])
        rows.append("".join(values))
    if len(names) != int(count):
        raise UserError(
            f"{path}:1: announces {int(count)} images, but {len(names)} follow: the file is damaged; {HOW_TO_GET}."
        )
    # Each value has one "1", preceded by a "-" where it is -1: a pass over 8 million values without a loop.
    characters = np.frombuffer("".join(rows).encode(), dtype=np.uint8)
    negated = np.zeros(len(characters), dtype=bool)
    negated[1:] = characters[:-1] == ord("-")
    present = ~negated[characters == ord("1")]
    return names, torch.as_tensor(present).view(len(names), len(attribute_names))


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


def _decode(image_dir: Path, names: list[str], images: Tensor) -> None:
    """Decode the images into `images`, (N, 3, res, res): each cropped to its centre square and resized, by as
    many worker processes as this process may use cores (torch's number of threads)."""
    present = {entry.name for entry in image_dir.iterdir()}  # one listing instead of a check per image
    for index, name in enumerate(names):
        if name not in present:
            raise UserError(f"{image_dir / name} is missing ({ATTR_FILE}:{index + FIRST_ROW} lists it); {HOW_TO_GET}.")
    workers = torch.get_num_threads()
    log.info(
        f"Decoding {len(names):,} CelebA images to {images.shape[-1]}x{images.shape[-1]} px in {workers} processes, "
        "once: later runs read them from a cache."
    )
    chunks = [range(start, min(start + CHUNK, len(names))) for start in range(0, len(names), CHUNK)]
    # Forked, the workers inherit the names and `images`, a shared mapping that they write into: nothing but
    # each chunk's range and count goes through a pipe.
    pool = ProcessPoolExecutor(
        workers,
        mp_context=multiprocessing.get_context("fork"),
        initializer=_start_worker,
        initargs=(image_dir, names, images.numpy()),
    )
    start = last_report = time.monotonic()
    decoded = 0
    try:
        for count in pool.map(_decode_chunk, chunks):
            decoded += count
            now = time.monotonic()
            if now - last_report >= PROGRESS_S and decoded < len(names):
                rate = decoded / (now - start)
                log.info(
                    f"Decoding CelebA: {decoded:,} of {len(names):,} images, {rate:,.0f} images/s, "
                    f"{_duration((len(names) - decoded) / rate)} left."
                )
                last_report = now
    finally:
        pool.shutdown(cancel_futures=True)  # after an unreadable image, the rest are not decoded
    seconds = time.monotonic() - start
    log.info(f"Decoded {len(names):,} images in {_duration(seconds)} ({len(names) / seconds:,.0f} images/s).")


# What a worker process decodes: the image folder, the names, and the array to write into (set once per process).
_job: tuple[Path, list[str], np.ndarray] | None = None


def _start_worker(image_dir: Path, names: list[str], images: np.ndarray) -> None:
    global _job  # noqa: PLW0603 (the state of a worker process, set as it starts)
    _job = (image_dir, names, images)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the main process, which stops the workers


def _decode_chunk(indices: range) -> int:
    """Decode the images at `indices` into the shared array; their number."""
    assert _job is not None
    image_dir, names, images = _job
    res = images.shape[-1]
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


def _duration(seconds: float) -> str:
    """42 -> '42 s'; 134 -> '2 min 14 s'."""
    minutes, seconds = divmod(round(seconds), 60)
    return f"{minutes} min {seconds} s" if minutes else f"{seconds} s"
