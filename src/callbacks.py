"""Hydra callbacks: objects whose methods Hydra calls at fixed points of a run or a multirun, whichever
sweeper and launcher is used. conf/config.yaml registers them under `hydra.callbacks`."""

import sys
import tempfile
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig
from typing_extensions import override

from src.sweep_summary import summarise_sweep

__all__ = ["OutputDirCheck", "SweepSummary"]


class OutputDirCheck(Callback):
    """Stop a run whose output directory cannot be written to, with one line, before Hydra tries to
    create the directory (and fails with a traceback)."""

    @override
    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        _check_writable(Path(config.hydra.run.dir), "hydra.run.dir")

    @override
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        _check_writable(Path(config.hydra.sweep.dir), "hydra.sweep.dir")


class SweepSummary(Callback):
    """Summarise a multirun in its sweep directory (src/sweep_summary.py), and print the summary.

    Called after the last job, and also when the sweep stopped with an error. It reads the job
    directories rather than the jobs' return values because the jobs may have run in other processes or
    on other machines (submitit, SLURM): every launcher leaves their output directories, and Hydra calls
    `on_multirun_end` on the machine that started the sweep.
    """

    @override
    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        summarise_sweep(Path(config.hydra.sweep.dir))


def _check_writable(directory: Path, key: str) -> None:
    try:
        directory.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=directory).close()
    except OSError as error:
        # Hydra turns a callback's exceptions into warnings, and goes on; SystemExit is not one of them.
        sys.exit(f"Error: cannot write to the output directory {directory} ({error}); set {key} to a writable one.")
