"""Continuing a multirun that stopped: the same command, with the sweep directory it ran in.

Hydra starts every multirun afresh, in a new timestamped sweep directory. Given the directory of a
stopped one (`hydra.sweep.dir`), the same overrides make the same jobs, numbered alike, so each job
runs in its own earlier directory and picks up where it stopped (`run()`): a finished job reports
its recorded metrics without running, an interrupted one continues from its checkpoint, a failed
one, or one that never started, runs.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from src.common.errors import UserError
from src.records.hydra_record import saved_overrides

__all__ = ["check_same_sweep", "continue_command"]

SWEEP_DIR = "hydra.sweep.dir"
SAVED_CONFIG = "multirun.yaml"  # Hydra's basic sweeper saves the sweep's config there


def continue_command(sweep_dir: str) -> str:
    """The command line of this multirun, with its sweep directory: the command that continues it."""
    arguments = [argument for argument in sys.argv[1:] if not argument.lstrip("+").startswith(f"{SWEEP_DIR}=")]
    return shlex.join(["python", sys.argv[0], *arguments, f"{SWEEP_DIR}={sweep_dir}"])


def check_same_sweep(sweep_dir: Path, task_overrides: list[str]) -> bool:
    """Whether `sweep_dir` holds an earlier run of this sweep, which this one continues. A sweep directory
    of other overrides is refused: its job directories would be reused for other configurations."""
    saved = sweep_dir / SAVED_CONFIG
    if not saved.is_file():
        return False
    # Unresolved, as typed: an override such as `dm.root=${oc.env:HOME}/data` is compared as such.
    earlier = saved_overrides(saved, "hydra", "overrides", "task")
    if earlier is None:
        raise UserError(
            f"{SWEEP_DIR}={sweep_dir} holds a {SAVED_CONFIG} that is no record of a sweep of this program: choose "
            "another sweep directory."
        )
    if earlier != task_overrides:
        raise UserError(
            f"{SWEEP_DIR}={sweep_dir} holds a sweep of other overrides ({shlex.join(earlier)}); "
            "continue it with those, in that order, or choose another sweep directory."
        )
    return True
