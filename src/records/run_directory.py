"""The output directory of a run, held by the run alone while it works there: Hydra's record of the run
(.hydra/), its checkpoint and its result (metrics.json)."""

from __future__ import annotations

from collections.abc import Generator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from src.common.errors import UserError
from src.common.files import exclusive_lock
from src.common.os_errors import os_error_line
from src.common.paths import shown
from src.records.hydra_record import RECORD, HydraRecord
from src.records.metrics import FINISHED, METRICS_FILE, RunResult, read_result, write_result

if TYPE_CHECKING:
    from omegaconf import DictConfig

__all__ = ["LOCK_FILE", "RunDirectory", "how_to_continue"]

LOCK_FILE = ".run.lock"  # held by the run working in the output directory; it stays, empty, when the run ends


class RunDirectory:
    """The output directory of one run, from the moment the run claims it to the moment it records its result."""

    def __init__(self, path: Path, record: HydraRecord | None) -> None:
        self.path = path
        self._record = record  # Hydra's record of the run; None in the processes other than rank 0

    @classmethod
    @contextmanager
    def claim(cls, path: Path, config: DictConfig, *, main: bool) -> Generator[RunDirectory]:
        """Work in `path` (made if missing). The run's main process (`main`: rank 0, whose other processes work
        in it too) claims it: a second run there at the same time, which would interleave its checkpoints and
        logs with this one's, is refused. Hydra's record of the run is saved where there is none yet, and taken
        back if the run is then refused (UserError): a refused run leaves the directory as it was."""
        path.mkdir(parents=True, exist_ok=True)  # Hydra made it; a caller of `run()` may not have
        if not main:
            yield cls(path, None)
            return
        try:
            lock = exclusive_lock(path / LOCK_FILE, wait=False)
        except BlockingIOError:
            raise UserError(
                f"another run is working in the output directory {shown(path)}: wait until it ends, "
                "or choose another output directory."
            ) from None
        with lock:
            record = HydraRecord.of_this_job(config, path)
            if record is not None:
                record.save_if_new()
            try:
                yield cls(path, record)
            except UserError:
                if record is not None:
                    record.take_back()
                raise

    @contextmanager
    def accepting(self) -> Generator[None]:
        """Prepare the run within this block. Refused there (UserError), the directory stays as it was; else
        the run is accepted, and Hydra's record of it kept, over an earlier run's too: also where preparing
        fails otherwise (a bug, a crash), as a run can fail while it trains: recorded, to be run again."""
        try:
            yield
        except UserError:
            raise
        except Exception:
            self._accept()
            raise
        self._accept()

    def finished_result(self) -> RunResult | None:
        """The result of a run that finished here (a sweep continued after a stop runs its finished jobs
        again); None if there is none."""
        metrics_file = self.path / METRICS_FILE
        if metrics_file.exists() and not metrics_file.is_file():
            raise UserError(f"{shown(metrics_file)} is not a file: move it away, so that the run can write it.")
        result = read_result(self.path)
        return result if result is not None and result.status == FINISHED else None

    def save_result(self, result: RunResult) -> None:
        """Write metrics.json (the main process's to write)."""
        try:
            write_result(self.path, result)
        except OSError as error:
            path_problem = os_error_line(error)  # a folder where the file goes, say: what to do about it
            if path_problem is not None:
                raise UserError(
                    f"could not write the result: {path_problem} The checkpoint is saved; to continue, "
                    f"{how_to_continue(self.path)}"
                ) from None
            raise UserError(
                f"could not write {shown(self.path / METRICS_FILE)} ({error}); the checkpoint is saved: make room, "
                f"then to continue, {how_to_continue(self.path)}"
            ) from None

    def _accept(self) -> None:
        if self._record is not None:
            self._record.accept()


def how_to_continue(output_dir: Path) -> str:
    """What continues the run whose output directory this is: Hydra's rerun of the overrides it saved
    there; without them (`run()` called as a library), calling `run()` again."""
    if (output_dir / RECORD / "overrides.yaml").is_file():
        return f"run: python main.py --experimental-rerun {shown(output_dir)}"
    return f"call run() again with the same config and output_dir={shown(output_dir)}"
