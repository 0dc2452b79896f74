"""Writing a file so that readers, and a later run, find the old file or the new one, never a partial one;
and a lock, so that one process at a time writes what several may want to write."""

import fcntl
import os
from collections.abc import Callable
from pathlib import Path
from typing import IO, TextIO

__all__ = ["exclusive_lock", "write_atomically"]


def write_atomically(path: Path, write: Callable[[IO[bytes]], object]) -> None:
    """Write a file through `write(file)` under a temporary name, then rename it (a rename within a
    directory is atomic). If writing fails, or the process dies, the previous file stays intact."""
    temporary = path.with_name(f"{path.name}.tmp")
    try:
        with temporary.open("wb") as file:
            write(file)
            file.flush()
            # On the disk before the rename: a machine that crashes cannot leave an empty file behind.
            os.fsync(file.fileno())
        temporary.replace(path)
    finally:
        temporary.unlink(missing_ok=True)


def exclusive_lock(path: Path, *, wait: bool = True) -> TextIO:
    """Hold the lock file `path` (created, with its folder, if missing) until the returned file is closed,
    also by the process dying. Waits while another process holds it; with `wait=False`, raises
    BlockingIOError instead. (Linux extends `flock` to the machines that share a folder over NFS.)"""
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = path.open("a")  # "a": never truncates what the holder wrote into it
    try:
        fcntl.flock(lock, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        lock.close()
        raise
    return lock
