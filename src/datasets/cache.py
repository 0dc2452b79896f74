"""Prepared tensors cached next to the data: built once, shared by the processes of a node, checked when read.

Preparing data (decoding, resizing, colouring) costs seconds to minutes; reading it back, a fraction. A cache
file is named by a hash of everything that changes its contents. It is built under a lock, so that the jobs of
a SLURM array or the processes of a distributed run build it once while the others wait, and renamed into
place when whole. Each read memory-maps it and checks it against the checksums written with it (see
`tensor_file`): a damaged cache is rebuilt with a warning. The data's fingerprint is computed once, when the
cache is written, and stored with it: a run knows which data it has without reading all of it again.
"""

import hashlib
import json
import logging
import mmap
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from src.common.files import exclusive_lock, write_atomically
from src.common.paths import shown
from src.datasets import tensor_file
from src.datasets.tensor_file import Build, DamagedError, Tensors

__all__ = ["Prepared", "cache_key", "load_or_build"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Prepared:
    """Prepared tensors, and their fingerprint: a SHA-256 of their names, types, shapes and bytes."""

    tensors: Tensors
    fingerprint: str


# The data last loaded in this process: the jobs of a local multirun share a process, and consecutive jobs
# with the same data settings reuse the tensors without touching the disk.
_last_loaded: tuple[Path, Prepared] | None = None


def cache_key(settings: object) -> str:
    """A short name for `settings`: JSON-able, everything that changes the tensors, including the version
    of the code that prepares them (each data module's CACHE_FORMAT), so that no run reads a cache that
    an older version wrote (nor one of another file layout)."""
    key = json.dumps([settings, tensor_file.MAGIC.decode()], sort_keys=True, default=str)
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def load_or_build(path: Path, build: Build) -> Prepared:
    """The tensors cached at `path`, or if there are none (or damaged ones), those that `build(empty)` returns,
    cached there first. `build` may make its large tensors with `empty`, to write them into the file in place."""
    global _last_loaded  # noqa: PLW0603 (a one-entry memo for the jobs of a multirun)
    if _last_loaded is not None and _last_loaded[0] == path:
        return _last_loaded[1]
    _last_loaded = None  # let the last job's tensors go before building new ones
    seen = _identity(path)
    # A warm start reads without the lock: the processes of a node check the cache at the same time.
    prepared = _read(path) if seen is not None else None
    if prepared is None:
        prepared = _build_once(path, build, seen)
    _last_loaded = (path, prepared)
    return prepared


def _identity(path: Path) -> tuple[int, int] | None:
    """Which file is at `path` (inode and modification time), or None if there is none."""
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_ino, stat.st_mtime_ns


def _build_once(path: Path, build: Build, seen: tuple[int, int] | None) -> Prepared:
    """Build and cache the tensors under the lock, unless another process wrote them while this one waited
    (the file is not the one `seen` before)."""
    lock_path = path.with_name(f"{path.name}.lock")
    try:
        try:
            lock = exclusive_lock(lock_path, wait=False)
        except BlockingIOError:
            log.info(f"Another process is preparing the data for {shown(path)}; waiting for it.")
            lock = exclusive_lock(lock_path)
    except OSError as error:  # a read-only data folder: work without the cache
        log.warning(f"cannot use the cache {shown(path)} ({error}); preparing the data without it.")
        return _in_memory(build)
    with lock:
        if _identity(path) != seen:
            prepared = _read(path)
            if prepared is not None:
                return prepared
        return _write(path, build)


def _read(path: Path) -> Prepared | None:
    """The cached tensors, checked, or None if the cache is damaged (with a warning)."""
    try:
        tensors, fingerprint = tensor_file.read(path)
    except DamagedError as error:
        log.warning(f"the cache {shown(path)} is damaged ({error}); preparing the data again.")
        return None
    log.info(f"Read the prepared data from the cache {shown(path)}.")
    return Prepared(tensors, fingerprint)


def _write(path: Path, build: Build) -> Prepared:
    """Build the tensors into a new cache file at `path`; return them, memory-mapped from it. If the file cannot
    be written (a full disk), the tensors are returned all the same, with a warning."""
    built: list[Tensors] = []
    try:
        write_atomically(path, lambda file: tensor_file.write(file, path.name, build, built))
    except OSError as error:
        log.warning(f"could not write the cache {shown(path)} ({error}); the next run prepares the data again.")
        # Tensors built into the file are still there: a file deleted while mapped stays until unmapped.
        return Prepared(built[0], tensor_file.fingerprint(built[0])) if built else _in_memory(build)
    log.info(f"Cached the prepared data in {shown(path)}; later runs read it from there.")
    # Mapped anew, read-only, as the other processes map it; checked as it was written, not again.
    tensors, fingerprint = tensor_file.read(path, check=False)
    return Prepared(tensors, fingerprint)


def _in_memory(build: Build) -> Prepared:
    """The tensors built without a cache file, and their fingerprint (a pass over them)."""

    def empty(shape: tuple[int, ...], dtype: torch.dtype) -> Tensor:
        nbytes = int(torch.Size(shape).numel()) * dtype.itemsize
        # A shared mapping: the processes that the build forks write into the same memory.
        memory = torch.frombuffer(mmap.mmap(-1, max(nbytes, 1)), dtype=torch.uint8)
        return memory[:nbytes].view(dtype).view(shape)

    tensors = build(empty)
    return Prepared(tensors, tensor_file.fingerprint(tensors))
