"""Paths as the user means them: relative to the directory the program was started in.

With `hydra.job.chdir=True`, Hydra changes the working directory to each run's output directory
before the run starts; a relative `dm.root` would then point into it (and download MNIST once per
run). Hydra records the directory it started in (`hydra.runtime.cwd`), and `to_absolute_path`
resolves against it; outside Hydra (`run()` called as a library), against the working directory.
"""

from pathlib import Path

from hydra.utils import to_absolute_path

from src.common.errors import UserError

__all__ = ["shown", "user_path"]


def user_path(path: str | Path, key: str | None = None) -> Path:
    """`path` made absolute: `~` expanded, and relative to the directory the program was started in; `key`: the
    setting it comes from, for the message where `~user` names no user."""
    try:
        expanded = Path(path).expanduser()
    except RuntimeError:  # `~user` of a user that does not exist (or no home for `~`)
        given = f"{key}={path}" if key else str(path)
        raise UserError(
            f"{given}: {Path(path).parts[0]} is the home of a user, and this machine has no such user; give the path "
            "in full."
        ) from None
    return Path(to_absolute_path(str(expanded)))


def shown(path: str | Path) -> str:
    """`path` as the user would type it: relative to the directory the program was started in, if it is in it."""
    path, start = Path(path).absolute(), user_path(".")
    return str(path.relative_to(start)) if path.is_relative_to(start) else str(path)
