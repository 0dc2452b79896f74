"""Hydra callbacks: objects whose methods Hydra calls at fixed points of a run or a multirun, whichever
sweeper and launcher is used. conf/config.yaml registers them under `hydra.callbacks`."""

import logging
import sys
import tempfile
from pathlib import Path
from typing import Any, cast

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf
from typing_extensions import override

from src.errors import UserError
from src.sweep_continuation import check_same_sweep, continue_command
from src.sweep_summary import summarise_sweep

__all__ = ["OutputDirCheck", "SweepContinuation", "SweepSummary"]

log = logging.getLogger(__name__)


class OutputDirCheck(Callback):
    """Stop a run whose output directory cannot be written to, with one line, before Hydra tries to
    create the directory (and fails with a traceback)."""

    @override
    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        _check_writable(Path(config.hydra.run.dir), "hydra.run.dir")

    @override
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        _check_writable(Path(config.hydra.sweep.dir), "hydra.sweep.dir")


class SweepContinuation(Callback):
    """Print, as a multirun starts, the command that continues it if it stops (src/sweep_continuation.py);
    refuse a sweep directory that holds a sweep of other overrides."""

    @override
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = config.hydra.sweep.dir
        task_overrides = cast(list[str], OmegaConf.to_container(config.hydra.overrides.task, resolve=False))
        try:
            if check_same_sweep(Path(sweep_dir), task_overrides):
                log.info(f"Continuing the sweep in {sweep_dir}: finished jobs report their results, the others run.")
        except UserError as error:
            sys.exit(f"Error: {error}")
        log.info(f"If this sweep stops, continue it with: {continue_command(sweep_dir)}")


class SweepSummary(Callback):
    """Summarise a multirun in its sweep directory (src/sweep_summary.py), and print the summary.

    Called after the last job, and also when the sweep stopped with an error. It reads the job
    directories rather than the jobs' return values because the jobs may have run in other processes or
    on other machines (submitit, SLURM): every launcher leaves their output directories, and Hydra calls
    `on_multirun_end` on the machine that started the sweep.
    """

    started = False

    @override
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        # Not reached when a callback listed before this one stops the multirun (a refused sweep
        # directory): Hydra still calls `on_multirun_end`, which must then not summarise that directory.
        self.started = True

    @override
    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if not self.started:
            return
        sweep_dir = config.hydra.sweep.dir
        jobs = summarise_sweep(Path(sweep_dir), sweeper=config.hydra.sweeper)
        interrupted = [job.name for job in jobs if job.status == "interrupted"]
        if interrupted:  # by Ctrl-C, or SLURM's time limit: the sweep stopped
            command = continue_command(sweep_dir)
            log.info(f"Interrupted jobs: {', '.join(interrupted)}; to continue the sweep, run: {command}")


def _check_writable(directory: Path, key: str) -> None:
    try:
        directory.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=directory).close()
    except OSError as error:
        # Hydra turns a callback's exceptions into warnings, and goes on; SystemExit is not one of them.
        sys.exit(f"Error: cannot write to the output directory {directory} ({error}); set {key} to a writable one.")
