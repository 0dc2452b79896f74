"""Hydra callbacks: objects whose methods Hydra calls at fixed points of a run or a multirun, whichever
sweeper and launcher is used. conf/config.yaml registers them under `hydra.callbacks`."""

import logging
import shutil
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

from hydra.experimental.callback import Callback
from hydra.plugins.launcher import Launcher
from hydra.plugins.sweeper import Sweeper
from hydra.types import RunMode
from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from typing_extensions import override

from src.checks.schema import check_hydra_part
from src.common.errors import RunFailedError, UserError
from src.common.exits import exit_if_ending_on_user_error, exit_on_user_error, exit_with_error
from src.common.files import written_together
from src.common.paths import user_path
from src.common.targets import EXECUTION_WHITELIST, check_target, imported_class, instantiates, whitelisted
from src.optuna_sweeper.settings import check_sweeper_settings
from src.optuna_sweeper.study import rerun_trials, stored_study
from src.records.metrics import METRIC
from src.sweeps.continuation import check_same_sweep, continue_command
from src.sweeps.plots import draw_sweep
from src.sweeps.summary import record_job, summarise_sweep

__all__ = ["HydraStepErrors", "OutputDirCheck", "StartCheck", "SweepContinuation", "SweepSummary"]

log = logging.getLogger(__name__)


class HydraStepErrors(Callback):
    """Hydra's own steps run outside the task function: it makes a run's output directory and opens its log
    file there (in a multirun, those of each job that the basic launcher runs in this process). An error there
    that the user can fix (a file where the directory goes, a folder where the log file goes) would end in
    Hydra's traceback; at the end of the run or multirun, where it is in flight, it ends the program with one
    line instead. conf/config.yaml lists this callback first: Hydra calls the end hooks last to first, so
    that the others (the sweep's summary) come before."""

    @override
    def on_run_end(self, config: DictConfig, **kwargs: Any) -> None:
        exit_if_ending_on_user_error()

    @override
    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        exit_if_ending_on_user_error()


class OutputDirCheck(Callback):
    """Stop a run whose output directory cannot be written to, with one line, before Hydra tries to
    create the directory (and fails with a traceback)."""

    @override
    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        _check_writable(Path(config.hydra.run.dir), "hydra.run.dir")

    @override
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        _check_writable(Path(config.hydra.sweep.dir), "hydra.sweep.dir")


class StartCheck(Callback):
    """Refuse, before Hydra writes anything, a run whose overrides of Hydra's settings hold a credential
    (Hydra saves them in .hydra/hydra.yaml), and a multirun that cannot go well: Hydra saves the sweep's
    overrides (multirun.yaml) before any job starts, and the summary shows them. Each job checks its
    own config again (`checked_config()`)."""

    def __init__(self, callback_targets: Mapping[str, str]) -> None:
        """`callback_targets` (`${callback_targets:}` in conf/config.yaml): the `_target_` of every callback.
        Hydra creates the callbacks in their order, this one before any that a config adds, and refuses code
        that a config may not name with its traceback: here, with one line."""
        with exit_on_user_error():
            for name, target in callback_targets.items():
                _check_callback(f"hydra.callbacks.{name}", target)

    @override
    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        with exit_on_user_error():
            check_hydra_part(config)  # credentials, hydra.run.dir and the log file's name resolved, hydra.job.env_set

    @override
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        with exit_on_user_error():
            # Every value of every swept setting is in the overrides, as typed; the config, resolved, holds what
            # the config files and interpolations add, and the sweeper's study name and search space.
            check_hydra_part(config)
            check_target(config.hydra.sweeper, "hydra.sweeper", Sweeper, "hydra/sweeper")
            check_target(config.hydra.launcher, "hydra.launcher", Launcher, "hydra/launcher")
            _refuse_slurm_without_slurm(config)
            _refuse_one_wandb_run_for_every_job(config)
            if instantiates(config.hydra.sweeper, OptunaSweeper):
                check_sweeper_settings(config.hydra.sweeper, _overrides(config, "task"), Path(config.hydra.runtime.cwd))


class SweepContinuation(Callback):
    """Print, as a multirun starts, the command that continues it if it stops (`continue_command()`);
    refuse a sweep directory that holds a sweep of other overrides."""

    @override
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = config.hydra.sweep.dir
        with exit_on_user_error():
            if check_same_sweep(config):
                log.info(f"Continuing the sweep in {sweep_dir}: finished jobs report their results, the others run.")
        log.info(f"If this sweep stops, continue it with: {continue_command(sweep_dir)}")


class SweepSummary(Callback):
    """Summarise a multirun in its sweep directory (`summarise_sweep()`), print the summary, and draw its
    pictures (`draw_sweep()`).

    Called after the last job, and also when the sweep stopped with an error. It reads the job
    directories rather than the jobs' return values because the jobs may have run in other processes or
    on other machines (submitit, SLURM): every launcher leaves their output directories, and Hydra calls
    `on_multirun_end` on the machine that started the sweep.
    """

    started = False

    @override
    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        # In the job's process (on a SLURM node, say): the summary covers the jobs the sweep launched alone.
        if config.hydra.mode == RunMode.MULTIRUN:
            record_job(user_path(config.hydra.sweep.dir), Path(config.hydra.runtime.output_dir))

    @override
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        # Not reached when a callback listed before this one stops the multirun (a refused sweep
        # directory): Hydra still calls `on_multirun_end`, which must then not summarise that directory.
        self.started = True

    @override
    @exit_on_user_error()  # a summary.csv that cannot be written, say: Hydra would turn it into a warning
    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if not self.started:
            return
        sweep_dir = config.hydra.sweep.dir
        study = stored_study(config.hydra.sweeper)
        reruns = {str(trial): str(again) for trial, again in rerun_trials(study).items()} if study else {}
        with written_together():  # the summary beside its pictures, all old or all new (a Ctrl-C meanwhile)
            summary = summarise_sweep(Path(sweep_dir), reruns)
            if summary.jobs:
                pictures = draw_sweep(Path(sweep_dir), summary.groups, METRIC, config.hydra.sweeper)
                if pictures:
                    log.info(f"Pictures: {', '.join(str(path) for path in pictures)}")
        jobs = summary.jobs
        interrupted = [job.name for job in jobs if job.status == "interrupted"]
        if interrupted:  # by Ctrl-C, or SLURM's time limit: the sweep stopped
            command = continue_command(sweep_dir)
            log.info(f"Interrupted jobs: {', '.join(interrupted)}; to continue the sweep, run: {command}")
        # Called in a `finally`: what ends the sweep is in flight, which Hydra would print with its traceback;
        # one line says more. A job that submitit ran in a process of its own (on a SLURM node) ended without a
        # result: the error line it printed, if any (it was refused there). Every job failed: the last failure
        # (an Optuna study with no completed trial fails as well), and a line that says so. A job that failed
        # while it trained (RunFailedError): its error. A job died without a word (killed, out of memory):
        # submitit's account of it. An exit (an error already said in one line, Ctrl-C) goes on as it is.
        from submitit.core.utils import FailedSubmissionError, UncompletedJobError

        ending = sys.exc_info()[1]
        from_submitit = isinstance(ending, UncompletedJobError | FailedSubmissionError)
        job_errors = [line for line in str(ending).splitlines() if line.startswith("Error: ")] if from_submitit else []
        if job_errors:
            exit_with_error(job_errors[-1].removeprefix("Error: "))
        if jobs and all(job.status == "failed" for job in jobs) and (ending is None or isinstance(ending, Exception)):
            exit_with_error(
                f"every job of the sweep failed ({len(jobs)}); each job's log says why, "
                f"{sweep_dir}/JOB/{config.hydra.job.name}.log."
            )
        if from_submitit or isinstance(ending, RunFailedError):
            exit_with_error(str(ending))


def _overrides(config: DictConfig, kind: str) -> list[str]:
    """The command line's overrides of the task's config (`task`) or of Hydra's (`hydra`), as typed."""
    return cast(list[str], OmegaConf.to_container(config.hydra.overrides[kind], resolve=False))


def _check_callback(key: str, target: str) -> None:
    if not target:
        raise UserError(f"{key} has no _target_, the class of the callback: give it one, or remove it.")
    if not whitelisted(target):
        raise UserError(
            f"{key}._target_={target}: a config may only name this program's code ({', '.join(EXECUTION_WHITELIST)}); "
            "remove that callback, or, if you trust its code, add its module to EXECUTION_WHITELIST in "
            "src/common/targets.py."
        )
    callback = imported_class(target)
    if callback is None or not issubclass(callback, Callback):
        raise UserError(f"{key}._target_={target} is not a Hydra callback (a subclass of Callback): remove it.")


def _refuse_slurm_without_slurm(config: DictConfig) -> None:
    """A SLURM launcher needs SLURM's commands, which submitit looks for only once the sweep has started."""
    if instantiates(config.hydra.launcher, SlurmLauncher) and not shutil.which("srun"):
        choice = config.hydra.runtime.choices.get("hydra/launcher")
        raise UserError(
            f"hydra/launcher={choice} submits the jobs to SLURM, but this machine has no SLURM (no srun on the PATH): "
            "start the sweep on the cluster's login node, or leave out hydra/launcher to run the jobs here."
        )


def _refuse_one_wandb_run_for_every_job(config: DictConfig) -> None:
    """A W&B run id set once for the multirun (a swept one is set for each job) would make every job log
    to the one W&B run, each over the other's."""
    from src.wandb_logging import WandbCfg, WandbMode

    try:
        run_id, mode = config.wandb.id, config.wandb.mode
    except OmegaConfBaseException:
        return  # each job reports what cannot be resolved
    if run_id is None or WandbCfg(mode=None if mode is None else WandbMode(mode)).resolved_mode() is WandbMode.DISABLED:
        return
    raise UserError(
        f"wandb.id={run_id} in a multirun would make every job the one W&B run {run_id}, each logging over the "
        "others: leave wandb.id unset (each job is then a W&B run of its own), or give each job its own "
        "(wandb.id=a,b,...)."
    )


def _check_writable(directory: Path, key: str) -> None:
    try:
        directory.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=directory).close()
    except OSError as error:
        # Hydra turns a callback's exceptions into warnings, and goes on; SystemExit is not one of them.
        exit_with_error(f"cannot write to the output directory {directory} ({error}); set {key} to a writable one.")
