"""Continuing a multirun that stopped: the same command, with the sweep directory it ran in.

Hydra starts every multirun afresh, in a new timestamped sweep directory. Given the directory of a
stopped one (`hydra.sweep.dir`), the same overrides make the same jobs, numbered alike, so each job
runs in its own earlier directory and picks up where it stopped (`run()`): a finished job reports
its recorded metrics without running, an interrupted one continues from its checkpoint, a failed
one, or one that never started, runs. It runs on the data the sweep started with, or not at all.
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import cast

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from src.common.errors import SweepError, UserError
from src.common.files import exclusive_lock, write_atomically
from src.common.paths import shown, user_path
from src.records.hydra_record import saved_overrides
from src.records.identity import bind_data

__all__ = ["bind_to_sweep", "check_same_sweep", "continue_command"]

SWEEP_DIR = "hydra.sweep.dir"
SAVED_CONFIG = "multirun.yaml"  # the sweep's config, where Hydra's basic sweeper saves it too
SWEEP_DATA = ".data.json"  # the data that the sweep's jobs ran on, by their data settings (`bind_to_sweep()`)


def continue_command(sweep_dir: str) -> str:
    """The command line of this multirun, with its sweep directory: the command that continues it."""
    arguments = [argument for argument in sys.argv[1:] if not argument.lstrip("+").startswith(f"{SWEEP_DIR}=")]
    return shlex.join(["python", sys.argv[0], *arguments, f"{SWEEP_DIR}={sweep_dir}"])


def check_same_sweep(config: DictConfig) -> bool:
    """Whether the sweep directory of the multirun whose `config` this is holds an earlier run of the same
    sweep, which this one continues. A sweep directory of other overrides is refused: its job directories
    would be reused for other configurations. A new one records the sweep's config (as Hydra's basic
    sweeper does, and for any sweeper), against which a later sweep there is checked."""
    sweep_dir = Path(config.hydra.sweep.dir)
    # Unresolved, as typed: an override such as `dm.root=${oc.env:HOME}/data` is compared as such.
    overrides = cast(list[str], OmegaConf.to_container(config.hydra.overrides.task, resolve=False))
    saved = sweep_dir / SAVED_CONFIG
    if not saved.is_file():
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(config, saved)
        return False
    earlier = saved_overrides(saved, "hydra", "overrides", "task")
    if earlier is None:
        raise UserError(
            f"{SWEEP_DIR}={sweep_dir} holds a {SAVED_CONFIG} that is no record of a sweep of this program: choose "
            "another sweep directory."
        )
    if earlier != overrides:
        raise UserError(
            f"{SWEEP_DIR}={sweep_dir} holds a sweep of other overrides ({shlex.join(earlier)}); "
            "continue it with those, in that order, or choose another sweep directory."
        )
    return True


def bind_to_sweep(data: dict[str, str]) -> None:
    """In a multirun, tie the sweep to the data its jobs train on (`data`: this job's identity, as a result
    records it): jobs of the same data settings (`bind_data()`) run on the same data, whatever their
    other settings and seeds. A sweep continued on other data (HYDRA_EXAMPLE_DATA no longer set, and
    synthetic digits instead of MNIST; another copy of MNIST) is refused, as a checkpoint is."""
    if not HydraConfig.initialized() or HydraConfig.get().mode is not RunMode.MULTIRUN:
        return
    hydra = HydraConfig.get()
    sweep_dir = user_path(hydra.sweep.dir)
    record = sweep_dir / SWEEP_DATA
    with exclusive_lock(sweep_dir / f"{SWEEP_DATA}.lock"):  # jobs that run at once bind one after the other
        bound: dict[str, dict[str, str]] = json.loads(record.read_text()) if record.is_file() else {}
        conflict = bind_data(bound, data, list(hydra.overrides.task), run="job", whole="sweep")
        if conflict is not None:
            raise SweepError(f"the sweep in {shown(sweep_dir)} {conflict}, or choose another sweep directory.")
        write_atomically(record, lambda file: file.write(json.dumps(bound, indent=2).encode()))
