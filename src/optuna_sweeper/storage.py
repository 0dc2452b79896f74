"""Where a study is kept: `hydra.sweeper.storage` names a journal file (Optuna's JournalStorage, an append-only
log that several processes write to, also on NFS), an SQLite database (`sqlite:///file.db`), or, with
null, this process's memory, which no other process (no job) can see."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from src.common.errors import UserError
from src.common.paths import shown

if TYPE_CHECKING:
    from optuna.storages import BaseStorage

__all__ = ["check_storage", "lock_file", "open_storage", "storage_file"]

SQLITE = "sqlite:///"
SQLITE_HEADER = b"SQLite format 3\x00"  # the first bytes of every SQLite database file


def open_storage(setting: str | None, cwd: Path) -> BaseStorage:
    """The storage that `hydra.sweeper.storage` names; a relative path is relative to `cwd`, the directory
    the sweep started from, also in a job that runs elsewhere (`hydra.job.chdir=true`, another machine)."""
    import optuna

    if setting is None:
        return optuna.storages.InMemoryStorage()
    path = check_storage(setting, cwd)
    if setting.startswith(SQLITE):
        return optuna.storages.RDBStorage(f"{SQLITE}{path}")
    from src.optuna_sweeper.journal import journal_backend

    return optuna.storages.JournalStorage(journal_backend(path))


def check_storage(setting: str, cwd: Path) -> Path:
    """The file that `hydra.sweeper.storage` names (`storage_file()`), refused if it holds no study that Optuna
    can read whole: an SQLite database that is none, a journal whose last record was cut short or that has a
    line Optuna cannot read (`check_journal()`)."""
    path = storage_file(setting, cwd)
    if setting.startswith(SQLITE):
        if path.is_file() and path.stat().st_size > 0 and _header(path) != SQLITE_HEADER:
            raise UserError(
                f"hydra.sweeper.storage={setting}: {shown(path)} is not an SQLite database; move it away, or keep "
                "the study in another file."
            )
        return path
    from src.optuna_sweeper.journal import check_journal

    check_journal(path)
    return path


def _header(path: Path) -> bytes:
    with path.open("rb") as file:
        return file.read(len(SQLITE_HEADER))


def storage_file(setting: str, cwd: Path) -> Path:
    """The file that `hydra.sweeper.storage` names, relative to `cwd`; an error if it names none, or one
    in a folder that does not exist."""
    if "://" in setting and not setting.startswith(SQLITE):
        raise UserError(
            f"hydra.sweeper.storage={setting}: a study must be kept in a file that every sweep process and "
            f"job reaches, a journal file (storage: fcn_params.journal) or an SQLite database "
            f"(storage: {SQLITE}fcn_params.db)."
        )
    path = cwd / setting.removeprefix(SQLITE)  # an absolute path stays as it is
    if not path.parent.is_dir():
        raise UserError(
            f"hydra.sweeper.storage={setting}: the folder {shown(path.parent)} does not exist; create it, or keep "
            "the study in a folder that does."
        )
    if path.exists() and not path.is_file():
        raise UserError(
            f"hydra.sweeper.storage={setting}: {shown(path)} is not a file; move it away, or keep the study in "
            "another file."
        )
    return path


def lock_file(setting: str, cwd: Path) -> Path:
    """The lock beside the study's file: held while a sweep process starts a trial, or a job binds the study
    to its data, so that sweep processes and jobs that share the study take turns."""
    path = storage_file(setting, cwd)
    return path.with_name(f"{path.name}.next-trial")
