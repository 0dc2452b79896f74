"""The thread budget: how many CPU threads each process that trains uses.

PyTorch gives a process as many threads as the machine has cores. Where several processes train at once on
one machine (the jobs of a parallel sweep, the processes of one distributed run), they would together run
more threads than there are cores, which then take turns and wait for each other. So each process takes its
share instead: the cores it may run on (its CPU affinity, which SLURM and `taskset` narrow), divided among the
processes that its launch runs at once on this machine, which its own config says:

- the tasks of its job (`hydra.launcher.tasks_per_node`: the processes of one distributed run), times
- the jobs that run at once: one for a single run and for the basic launcher (which runs a sweep's jobs one
  after another); for `submitit_local`, the sweeper's: Optuna's `n_jobs` slots, or the basic sweeper's
  batch (`max_batch_size` jobs, or all of the sweep's at once where it is unset).

Under SLURM, each task has CPUs of its own: `cpus_per_task`, which SLURM also sets as its affinity where it
binds tasks to their CPUs. What else runs on the machine (another sweep, another user's jobs) does not count:
a process that counted its neighbours would train with a number of threads that depends on them, and so
compute other last bits (see `docs/performance.md`). A user who knows better sets `threads` (or
OMP_NUM_THREADS, which PyTorch reads).
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import cast

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.types import RunMode
from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import LocalLauncher
from omegaconf import OmegaConf

from src.common.errors import UserError
from src.common.targets import instantiates

__all__ = ["ThreadBudget", "ThreadChoice", "choose_threads"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ThreadBudget:
    """This process's share of the CPU cores: `cores` divided among `jobs` jobs of `tasks` processes each."""

    cores: int  # that this process may run on
    jobs: int = 1  # that run at once on this machine
    tasks: int = 1  # processes of each job on this machine
    jobs_setting: str | None = None  # the setting that runs the jobs at once, for the log
    slurm_cpus: int | None = None  # SLURM's cpus_per_task: this task's own cores, within its CPU affinity

    @classmethod
    def of_this_process(cls, *, tasks: int) -> ThreadBudget:
        """The budget of this process, one of the `tasks` processes of its job on this machine."""
        cores = len(os.sched_getaffinity(0))
        slurm_cpus = os.environ.get("SLURM_CPUS_PER_TASK")
        if slurm_cpus is not None:
            return cls(cores=min(cores, int(slurm_cpus)), slurm_cpus=int(slurm_cpus))
        jobs, setting = _jobs_at_once()
        return cls(cores=cores, jobs=jobs, tasks=tasks, jobs_setting=setting)

    @property
    def threads(self) -> int:
        """Each process's share, at least one thread."""
        return max(1, self.cores // (self.jobs * self.tasks))

    def __str__(self) -> str:
        cores, threads = _count(self.cores, "core"), _count(self.threads, "thread")
        if self.slurm_cpus is not None:
            affinity = "" if self.cores == self.slurm_cpus else f"; its CPU affinity has {cores}"
            return f"{cores} for this task (SLURM's cpus_per_task={self.slurm_cpus}{affinity}): {threads}"
        processes = f" of {self.tasks} processes" if self.tasks > 1 else ""
        setting = f" ({self.jobs_setting})" if self.jobs_setting else ""
        return f"{cores}, {_count(self.jobs, 'job')}{processes} at once{setting}: {threads} each"


@dataclass(frozen=True)
class ThreadChoice:
    """The number of threads this process trains with, and who chose it."""

    threads: int
    budget: ThreadBudget  # this process's share of the cores
    chooser: str | None = None  # the setting that chose `threads` (`threads=N`, OMP_NUM_THREADS); None: the budget

    def use(self) -> None:
        """Give PyTorch's intra-op and inter-op threads, which also prepare the data, this number; say it in the
        log (once the run is accepted: a refused run leaves its output directory's log as it was)."""
        import torch

        if self.chooser is None:
            log.info(f"CPU threads: {self.budget}.")
        else:
            log.info(
                f"CPU threads: {self.threads} ({self.chooser}); the share of this process would be: {self.budget}."
            )
            if self.threads > self.budget.cores:
                log.warning(
                    f"{self.chooser} is more threads than the {_count(self.budget.cores, 'core')} this process may use."
                )
        torch.set_num_threads(self.threads)
        # Inter-op threads can be set once per process only, before any work uses them; a process that calls
        # `run()` again (a library user, a sweep of the basic launcher) keeps the first run's, which training
        # leaves unused: it runs its operations one after another.
        if torch.get_num_interop_threads() != self.threads:
            with contextlib.suppress(RuntimeError):
                torch.set_num_interop_threads(self.threads)


def choose_threads(setting: int | None, *, tasks: int) -> ThreadChoice:
    """The number of threads that the user chose (`setting`, the config's `threads`, or else the environment's
    OMP_NUM_THREADS, which PyTorch itself reads), or else this process's share of the cores. `tasks`: the
    processes of this run on this machine."""
    budget = ThreadBudget.of_this_process(tasks=tasks)
    chosen = _chosen_threads(setting)
    if chosen is None:
        return ThreadChoice(budget.threads, budget)
    threads, chooser = chosen
    return ThreadChoice(threads, budget, chooser)


def _chosen_threads(setting: int | None) -> tuple[int, str] | None:
    """The number of threads that the user chose, and where: the setting `threads`, or OMP_NUM_THREADS."""
    if setting is not None:
        return setting, f"threads={setting}"
    variable = os.environ.get("OMP_NUM_THREADS", "")
    if not variable:
        return None
    if not variable.isdigit() or int(variable) < 1:
        raise UserError(
            f"OMP_NUM_THREADS={variable} is not a number of threads: set it to 1 or more, or unset it for this "
            "process's share of the cores."
        )
    return int(variable), f"OMP_NUM_THREADS={variable}"


def _jobs_at_once() -> tuple[int, str | None]:
    """How many jobs the launcher runs at once on this machine, and the setting that says so."""
    if not HydraConfig.initialized():  # `run()` called as a library
        return 1, None
    hydra = HydraConfig.get()
    if hydra.mode != RunMode.MULTIRUN or not instantiates(hydra.launcher, LocalLauncher):
        return 1, None  # a single run; the basic launcher's jobs one after another; SLURM's on CPUs of their own
    if instantiates(hydra.sweeper, OptunaSweeper):
        return hydra.sweeper.n_jobs, f"hydra.sweeper.n_jobs={hydra.sweeper.n_jobs}"
    if instantiates(hydra.sweeper, BasicSweeper):
        size = hydra.sweeper.max_batch_size
        setting = f"hydra.sweeper.max_batch_size={'null: the whole sweep' if size is None else size}"
        return _basic_sweeper_batch(Path(hydra.sweep.dir), hydra.job.num), setting
    return 1, None


def _basic_sweeper_batch(sweep_dir: Path, job_num: int) -> int:
    """The number of jobs in the batch of job `job_num`: Hydra's basic sweeper hands the launcher
    `max_batch_size` jobs at a time (all of them where it is unset). They are counted as it counts them, from
    the sweep's settings, which it saves in the sweep directory (multirun.yaml) before it launches any job."""
    sweep = OmegaConf.load(sweep_dir / "multirun.yaml").hydra
    params = cast(dict[str, str], OmegaConf.to_container(sweep.sweeper.params)) if sweep.sweeper.params else {}
    arguments = [*(f"{key}={value}" for key, value in params.items()), *sweep.overrides.task]
    parser = OverridesParser.create(config_loader=GlobalHydra.instance().config_loader())
    batches = BasicSweeper.split_arguments(parser.parse_overrides(arguments), sweep.sweeper.max_batch_size)
    first = 0
    for batch in batches:
        if job_num < first + len(batch):
            return len(batch)
        first += len(batch)
    raise AssertionError(f"job {job_num} is not one of the {first} jobs of the sweep in {sweep_dir}")


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"
