"""Prepared tensors cached next to the data, safe when many jobs share one data folder.

Preparing data (decoding, resizing, colouring) costs seconds; reading it back costs a fraction of one.
A cache file is named by a hash of everything that changes its contents, written atomically, guarded by
a lock while it is built (so that a SLURM array builds it once), and checked against its recorded tensor
sizes when read (a full checksum would cost seconds for a cache of gigabytes).
"""

import hashlib
import json
import logging
import pickle
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor

from src.common.files import exclusive_lock, write_atomically

__all__ = ["cache_key", "load_or_build"]

log = logging.getLogger(__name__)
Tensors = dict[str, Tensor]
# The last data loaded in this process: the jobs of a local multirun share a process, and consecutive
# jobs with the same data settings reuse the tensors without touching the disk.
_last_loaded: tuple[Path, Tensors] | None = None


def cache_key(settings: object) -> str:
    """A short name for `settings`: JSON-able, everything that changes the tensors, including the version
    of the code that prepares them (each data module's CACHE_FORMAT), so that no run reads a cache that
    an older version wrote."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


def load_or_build(path: Path, build: Callable[[], Tensors]) -> Tensors:
    """The tensors cached at `path`, or, if there are none (or damaged ones), `build()`'s, cached there."""
    global _last_loaded  # noqa: PLW0603 (a one-entry memo for the jobs of a multirun)
    if _last_loaded is not None and _last_loaded[0] == path:
        return _last_loaded[1]
    _last_loaded = None  # let the last job's tensors go before building new ones
    try:
        lock = exclusive_lock(path.with_name(f"{path.name}.lock"))
    except OSError as error:  # a read-only data folder: work without the cache
        log.warning(f"cannot use the cache {path} ({error}); preparing the data without it.")
        return build()
    with lock:  # one process builds the cache while the others wait to read it
        tensors = _read(path)
        if tensors is None:
            tensors = build()
            _write(path, tensors)
    _last_loaded = (path, tensors)
    return tensors


def _sizes(tensors: Tensors) -> dict[str, list[int]]:
    return {name: list(tensor.shape) for name, tensor in tensors.items()}


def _read(path: Path) -> Tensors | None:
    """The cached tensors, or None if there is no cache or it is damaged (with a warning)."""
    if not path.is_file():
        return None
    try:
        # mmap: the tensors are paged in as they are used instead of being copied into memory first.
        contents = torch.load(path, mmap=True, weights_only=True)
        tensors, sizes = contents["tensors"], contents["sizes"]
        # A file cut short fails to load, or holds tensors smaller than recorded.
        if _sizes(tensors) == sizes:
            log.info(f"Read the prepared data from the cache {path}.")
            return tensors
        problem = "its tensors are not the recorded sizes"
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError, KeyError, TypeError) as error:
        problem = str(error).splitlines()[0].split(". ")[0]
    log.warning(f"the cache {path} is damaged ({problem}); preparing the data again.")
    return None


def _write(path: Path, tensors: Tensors) -> None:
    """Write atomically (only the holder of the lock writes, so one temporary name will do)."""
    try:
        write_atomically(path, lambda file: torch.save({"tensors": tensors, "sizes": _sizes(tensors)}, file))
        log.info(f"Cached the prepared data in {path}; later runs read it from there.")
    except (OSError, RuntimeError) as error:  # a full disk: the data is prepared, only the cache is missing
        log.warning(f"could not write the cache {path} ({error}); the next run prepares the data again.")
