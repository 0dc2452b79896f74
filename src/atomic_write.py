"""Writing a file so that readers, and a later run, find the old file or the new one, never a partial one."""

import os
from collections.abc import Callable
from pathlib import Path
from typing import IO

__all__ = ["write_atomically"]


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
