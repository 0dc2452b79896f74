"""Writing a file so that readers, and a later run, find the old file or the new one, never a partial one (and
several files so that they find all of them old, or all new); and a lock, so that one process at a time writes
what several may want to write."""

import errno
import fcntl
import os
import signal
import threading
from collections.abc import Callable, Generator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import IO, TextIO

__all__ = ["exclusive_lock", "write_atomically", "written_together"]

# The files written within `written_together()`, each under its temporary name, to be renamed at its end.
_TOGETHER: ContextVar[list[tuple[Path, Path]] | None] = ContextVar("written_together", default=None)


def write_atomically(path: Path, write: Callable[[IO[bytes]], object]) -> None:
    """Write a file through `write(file)` under a temporary name, then rename it (a rename within a
    directory is atomic). If writing fails, or the process dies, the previous file stays intact. Within
    `written_together()`, the rename waits for the end of the block."""
    # A name of this process's: two processes that write one file (two sweeps of one study, their summary)
    # never write into each other's temporary file.
    temporary = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        with temporary.open("wb") as file:
            write(file)
            file.flush()
            # On the disk before the rename: a machine that crashes cannot leave an empty file behind.
            os.fsync(file.fileno())
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    together = _TOGETHER.get()
    if together is not None:
        together.append((temporary, path))
        return
    _rename([(temporary, path)])


@contextmanager
def written_together() -> Generator[None]:
    """Within this block, `write_atomically()` leaves each file under its temporary name; at the end of the
    block all are renamed at once, Ctrl-C held back meanwhile: readers find every file old, or every file new
    (a summary beside its pictures). If the block fails, or is interrupted, the old files stay."""
    pending: list[tuple[Path, Path]] = []
    token = _TOGETHER.set(pending)
    try:
        yield
    except BaseException:
        for temporary, _ in pending:
            temporary.unlink(missing_ok=True)
        raise
    finally:
        _TOGETHER.reset(token)
    _rename(pending)


def _rename(files: list[tuple[Path, Path]]) -> None:
    """Rename each temporary file to its path, all or none as far as the file system allows: a path that is a
    folder is found before any is renamed; a Ctrl-C meanwhile takes effect after the last."""
    try:
        for _, path in files:
            if path.is_dir():
                raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
        with _ctrl_c_held_back():
            for temporary, path in files:
                temporary.replace(path)
    finally:
        for temporary, _ in files:
            temporary.unlink(missing_ok=True)


@contextmanager
def _ctrl_c_held_back() -> Generator[None]:
    """Within this block a Ctrl-C (SIGINT) waits, and takes effect as it ends (only the main thread gets signals)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if received:
            signal.raise_signal(signal.SIGINT)  # to the handler it was held back from


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
