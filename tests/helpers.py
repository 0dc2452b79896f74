"""What the tests share: where the program is, the settings of short runs, the environment it runs in, and how
a test starts it, waits for it and reads what it wrote. (Fixtures are in conftest.py.)"""

import csv
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import pytest
import torch
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from PIL import Image
from torch import nn

from src.training.loop import TrainingState

RunMain = Callable[..., subprocess.CompletedProcess[str]]  # the `run_main` fixture: `python main.py ARGS`
Train = Callable[..., float]  # the `train` fixture: `run()` in this process
REPO = Path(__file__).resolve().parents[1]
REAL_MNIST = REPO.parent / "shared" / "data" / "MNIST" / "raw"  # the four original archives, where present
# Relative to the directory a test runs the program in, a new one for each test: a fresh cluster numbers
# its jobs from 1 again, so two runs must never share the `.submitit/<job id>` folders.
SWEEP_DIR = "sweep"
# A run that trains and evaluates in about a second.
TINY = ("model.hidden_dim=16", "opt.epochs=1")
# Three epochs of about a second each: time to stop a run within its second epoch.
STOPPABLE = ("opt.epochs=3", "model.hidden_dim=256", "opt.batch_size=8", "model.dropout_prob=0.1")
# One thread: much faster on a busy 2-core machine, and the same for every run compared.
ONE_THREAD = {"OMP_NUM_THREADS": "1"}
# The jobs that submitit starts unpickle main.py's function, which imports `src`: from the repository.
IN_JOBS = {"PYTHONPATH": str(REPO)}
TWO_TASKS = ("hydra/launcher=submitit_local", "hydra.launcher.tasks_per_node=2")  # a run of two processes
STUDY = ("--multirun", "hydra/sweeper=fcn_params")  # the study is kept in ./fcn_params.journal
# A study whose trials the median pruner stops: three epochs each, one trial at a time, sampled alike every time.
PRUNED_STUDY = (
    *STUDY,
    "hydra/sweeper/pruner=median",
    "hydra.sweeper.pruner.n_startup_trials=1",
    "hydra.sweeper.n_trials=3",
    "hydra.sweeper.n_jobs=1",
    "hydra.sweeper.sampler.seed=0",
    *STOPPABLE,
    "hydra.sweep.dir=sweep",
)
# An optimiser that raises in one job as it trains (at its second step), like an experiment that crashes:
# one that refuses its settings, as it is built or at its first step, is a refused run.
FAILING_OPTIMIZER = """
import os

import torch
from hydra.core.hydra_config import HydraConfig


class AdamWFailingInOneJob(torch.optim.AdamW):
    def step(self, closure=None):
        if self.state and HydraConfig.get().job.num == int(os.environ["FAILING_JOB"]):
            raise RuntimeError("injected failure")
        return super().step(closure)
"""


def program_env(data_root: Path, env: dict[str, str] | None = None) -> dict[str, str]:
    """The environment the program runs in: the data under `data_root`, W&B quiet, and `env`."""
    return os.environ | {"HYDRA_EXAMPLE_DATA": str(data_root), "WANDB_SILENT": "true"} | (env or {})


def start(
    data_root: Path,
    cwd: Path,
    *args: str,
    env: dict[str, str] | None = None,
    program: Path = REPO / "main.py",
    merge_output: bool = False,
    own_session: bool = False,
) -> subprocess.Popen[str]:
    """Start `python main.py ARGS` in the background in `cwd`; `merge_output`: stderr in stdout; `own_session`:
    in a session of its own (killing the session kills its jobs)."""
    return subprocess.Popen(
        [sys.executable, str(program), *args],
        cwd=cwd,
        env=program_env(data_root, env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT if merge_output else subprocess.PIPE,
        text=True,
        start_new_session=own_session,
    )


def start_sweep(data_root: Path, cwd: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """`python main.py ARGS` in the background, in a session of its own (killing the session kills its jobs),
    one thread a job, its output (stdout and stderr) in stdout."""
    return start(data_root, cwd, *args, env=ONE_THREAD | IN_JOBS | (env or {}), merge_output=True, own_session=True)


def wait_until(
    condition: Callable[[], object], process: subprocess.Popen[str], what: str, timeout_s: float = 180
) -> None:
    """Wait until `condition()`; fail if the process ends first, or after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if process.poll() is not None:
            pytest.fail(f"the program ended before {what}:\n{process.communicate()}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"not {what} after {timeout_s} s")
        time.sleep(0.01)


def wait_for(path: Path, process: subprocess.Popen[str], timeout_s: float = 120) -> None:
    """Wait until `path` exists; fail if the process ends first, or after `timeout_s`."""
    wait_until(path.exists, process, f"{path.name} appeared", timeout_s)


def write_idx(path: Path, array: torch.Tensor) -> None:
    """Write a uint8 tensor as an IDX file: zero, type 0x08 (ubyte), rank, big-endian sizes, data."""
    header = bytes([0, 0, 0x08, array.dim()]) + b"".join(size.to_bytes(4, "big") for size in array.shape)
    path.write_bytes(header + array.contiguous().numpy().tobytes())


def copy_program(directory: Path) -> Path:
    """A copy of the program (main.py, src/, conf/, the lock file) in `directory`; the copy's main.py."""
    directory.mkdir(parents=True)
    for name in ("main.py", "src", "conf", "requirements.lock"):
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, directory / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(REPO / name, directory / name)
    return directory / "main.py"


def program_trusting(module: str, directory: Path) -> Path:
    """A copy of the program in `directory`, whose src/optimisation.py also trusts `module`, as a user who adds
    an optimiser of their own edits it; the copy's main.py."""
    program = copy_program(directory)
    optimisation = directory / "src" / "optimisation.py"
    trusted = 'TRUSTED_OPTIMIZER_MODULES = ("torch.optim",)'
    assert trusted in optimisation.read_text()
    optimisation.write_text(
        optimisation.read_text().replace(trusted, f'TRUSTED_OPTIMIZER_MODULES = ("torch.optim", "{module}")')
    )
    return program


def fail_job(job: int, tmp_path: Path) -> tuple[tuple[str, ...], dict[str, str], Path]:
    """The overrides that make job number `job` of a multirun raise, the environment they need, and the
    program that trusts the failing optimiser's module."""
    module_dir = tmp_path / "injected"
    module_dir.mkdir()
    (module_dir / "failing_optimizer.py").write_text(FAILING_OPTIMIZER)
    program = program_trusting("failing_optimizer", tmp_path / "program")
    overrides = ("opt.optimizer_cls=failing_optimizer.AdamWFailingInOneJob",)
    return overrides, {"PYTHONPATH": str(module_dir), "FAILING_JOB": str(job)}, program


def metrics_record(output_dir: Path) -> dict[str, Any]:
    """What the run in `output_dir` recorded in its metrics.json."""
    return json.loads((output_dir / "metrics.json").read_text())


def read_csv(path: Path) -> list[dict[str, str]]:
    """The rows of a CSV file, such as a sweep's summary.csv."""
    with path.open(newline="") as file:
        return list(csv.DictReader(file))


def summary_rows(sweep_dir: Path) -> list[dict[str, str]]:
    """The rows of summary.csv, which the sweep summary callback writes at the end of a multirun."""
    return read_csv(sweep_dir / "summary.csv")


def submitit_task_folders(sweep_dir: Path) -> list[Path]:
    """The folders of the array tasks, `.submitit/<array job id>_<task id>/`, with their logs."""
    return sorted(folder for folder in (sweep_dir / ".submitit").glob("*_*") if folder.is_dir())


def small_state(seed: int, width: int = 4) -> TrainingState:
    """The training state of a linear model of `width` inputs, as `seed` initialises it."""
    torch.manual_seed(seed)  # pyright: ignore[reportUnknownMemberType]
    model = nn.Linear(width, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    return TrainingState(model=model, optimizer=optimizer, generator=torch.Generator().manual_seed(seed))


def hydra_lines(output: str) -> list[str]:
    """The lines that Hydra's logger printed (the sweep's, not its jobs'), without their time stamps."""
    return [line.split("][HYDRA] ", 1)[1] for line in output.splitlines() if "][HYDRA] " in line]


def assert_pictures(output: str, cwd: Path, sweep: str, names: list[str]) -> None:
    """The pictures are named in the summary's last line, as paths from where the sweep ran, and are PNG images."""
    paths = [f"{sweep}/{name}.png" for name in names]
    assert hydra_lines(output)[-1] == f"Pictures: {', '.join(paths)}"
    for path in paths:
        with Image.open(cwd / path) as image:
            assert image.format == "PNG"


def load_study(cwd: Path) -> optuna.Study:
    """The study `hydra/sweeper=fcn_params` keeps in cwd/fcn_params.journal."""
    return optuna.load_study(study_name="fcn_params", storage=load_study_storage(cwd / "fcn_params.journal"))


def load_study_storage(journal: Path) -> JournalStorage:
    """Optuna's storage of the journal file `journal`, as any program would open it."""
    return JournalStorage(JournalFileBackend(str(journal)))
