"""What an operating-system error on a path says to the user: the path, what is wrong with it, and what to do.

A folder where the program writes a file, a file where it makes a folder, a path it may not write to, a full
disk: wherever they happen (in this program's code, in Hydra's, in a library's), Python raises an OSError that
names the path. `os_error_line()` turns it into one line; `src.common.errors` ends the program with it at each
entry point (the run, Hydra's callbacks, the sweeper). An OSError without a path is not described: its
traceback shows where it came from.
"""

import errno
from pathlib import Path

from src.common.paths import shown

__all__ = ["os_error_line"]

MOVE_IT_AWAY = "move it away, or choose another path"
NO_PERMISSION = "no permission to use {path} ({reason}): give yourself access, or choose another path."
NO_ROOM = "no room on the disk for {path} ({reason}): make room, then run again."
# What is wrong, and what to do, by the error's number; {path}: the path, {reason}: the system's words for it.
LINES: dict[int | None, str] = {
    errno.EISDIR: f"{{path}} is a folder, where the program writes a file: {MOVE_IT_AWAY}.",
    errno.EEXIST: f"{{path}} is a file, where the program makes a folder: {MOVE_IT_AWAY}.",
    errno.ENOTDIR: f"{{file_in_the_way}} is a file, where the program needs a folder (for {{path}}): {MOVE_IT_AWAY}.",
    errno.EACCES: NO_PERMISSION,
    errno.EPERM: NO_PERMISSION,
    errno.EROFS: "{path} is on a read-only file system: choose another path.",
    errno.ENOSPC: NO_ROOM,
    errno.EDQUOT: NO_ROOM,
    errno.ENOENT: "{path} does not exist, or its folder does not: create it, or choose another path.",
}
ANY_OTHER = "cannot use {path} ({reason}): check it, or choose another path."


def os_error_line(error: BaseException | None) -> str | None:
    """The line for an OSError on a path, also where it is the cause of another error (`raise ... from`, as
    Python's logging does for a log file it cannot open); None for any other error."""
    while error is not None and not (isinstance(error, OSError) and error.filename is not None):
        error = error.__cause__
    if not isinstance(error, OSError):
        return None
    # A rename (a file written under a temporary name, then renamed) fails for its target, the path the user knows.
    path = Path(str(error.filename2 if error.filename2 is not None else error.filename))
    in_the_way = next((part for part in reversed(path.parents) if part.exists() and not part.is_dir()), path)
    return LINES.get(error.errno, ANY_OTHER).format(
        path=shown(path), file_in_the_way=shown(in_the_way), reason=error.strerror or type(error).__name__
    )
