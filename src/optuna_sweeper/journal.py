"""A study's journal file (Optuna's JournalStorage, an append-only log of JSON records, one a line), read whole
before this program uses it, and never written after a record cut short.

A record is cut short where its writer stopped in the middle of it: a full disk, a machine that crashed.
Optuna's reader skips a last line without its end, and fails on any other line it cannot read; Optuna's writer
appends its records after whatever the file ends with, gluing the first onto the cut one: from then on no
process can read the study, and it is lost. Here the journal is read whole, under Optuna's lock, before a
study is opened in it, and each writer checks, once it holds the lock, that the file ends on a record boundary.
"""

from __future__ import annotations

import json
from pathlib import Path

from optuna.storages.journal import JournalFileBackend, JournalFileSymlinkLock
from typing_extensions import override

from src.common.errors import UserError
from src.common.paths import shown

__all__ = ["check_journal", "journal_backend"]

RECORD_END = b"\n"


def journal_backend(path: Path) -> JournalFileBackend:
    """Optuna's backend of the journal at `path`, checked whole (`check_journal()`), whose writers never append
    after a record cut short."""
    check_journal(path)
    return JournalFileBackend(str(path), lock_obj=_WholeRecordsLock(path))


def check_journal(path: Path) -> None:
    """Refuse a journal that Optuna cannot read whole: one whose last record was cut short, or with a line that
    is no record of Optuna's. A journal that does not exist yet is fine."""
    if not path.is_file():
        return
    lock = JournalFileSymlinkLock(str(path))  # the lock Optuna's writers hold: no record is half written now
    lock.acquire()
    try:
        content = path.read_bytes()
    finally:
        lock.release()
    *records, rest = content.split(RECORD_END)
    for number, record in enumerate(records, start=1):
        if not _is_record(record):
            raise UserError(
                f"line {number} of the study's journal {shown(path)} is not a record of Optuna's: the file is "
                "damaged, or no journal of Optuna's, and the study cannot be read whole. Restore it from a copy, "
                "or keep the study in another file (hydra.sweeper.storage)."
            )
    if rest:
        raise UserError(_cut_short(path))


def _is_record(line: bytes) -> bool:
    """Whether `line` is one of the records that Optuna's journal holds: a JSON object with an `op_code`."""
    try:
        record = json.loads(line)
    except ValueError:
        return False
    return isinstance(record, dict) and isinstance(record.get("op_code"), int)  # pyright: ignore[reportUnknownMemberType]


def _cut_short(path: Path) -> str:
    return (
        f"the study's journal {shown(path)} ends in a record cut short (a full disk, or a machine that stopped "
        "while it was written): Optuna never read that record, but what is written after it would be lost with "
        "it. Keep a copy of the file, delete its incomplete last line, and run again."
    )


class _WholeRecordsLock(JournalFileSymlinkLock):
    """Optuna's lock of the journal, which a writer holds while it appends: once it holds it, the journal must
    end on a record boundary, or the writer would glue its records onto a record cut short."""

    def __init__(self, path: Path) -> None:
        super().__init__(str(path))
        self._path = path

    @override
    def acquire(self) -> bool:
        acquired = super().acquire()
        with self._path.open("rb") as journal:
            size = journal.seek(0, 2)
            cut_short = size > 0 and journal.seek(size - 1) >= 0 and journal.read(1) != RECORD_END
        if cut_short:
            self.release()
            raise UserError(_cut_short(self._path))
        return acquired
