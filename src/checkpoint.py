"""Nothing lost: a checkpoint after every epoch, atomic writes, a clean stop on Ctrl-C and on SLURM's
warning of preemption or the time limit, and an output directory that is checked before a run starts.

A checkpoint holds everything that decides what training does next: the model, the optimiser, the
progress (epoch, step, metrics so far), the random states and the W&B run id. A run started again in
the same output directory continues from it, and ends with the same result, bit for bit on the CPU, as
a run that was never stopped.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import signal
import sys
import tempfile
import threading
from collections.abc import Callable, Generator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig
from typing_extensions import override

from src.errors import UserError

if TYPE_CHECKING:
    from types import FrameType

    from src.training import TrainingState

__all__ = [
    "CHECKPOINT_FILE",
    "SLURM_STOP_SIGNAL",
    "Checkpoint",
    "OutputDirCheck",
    "StopRequest",
    "stop_on_signals",
    "write_atomically",
]

log = logging.getLogger(__name__)
CHECKPOINT_FILE = "checkpoint.pt"
# Settings that may differ when a run continues: where it runs and logs, not what it computes.
MAY_CHANGE_ON_RESUME = ("gpu", "wandb.", "dm.root", "dm.download")


@dataclass(eq=False, kw_only=True)
class Checkpoint:
    """The checkpoint of one run. Made before training, it reads the checkpoint that a stopped run left,
    if any, and checks that it is one of the same config; `restore()` then loads it into the training
    state, and `save()` replaces it after each epoch."""

    path: Path
    config: dict[str, Any]  # the resolved config: a checkpoint is only continued with the same one
    wandb_id: str | None = None  # the W&B run to continue, if any; set when W&B starts
    _saved: dict[str, Any] | None = field(default=None, init=False, repr=False)  # what `restore()` loads

    def __post_init__(self) -> None:
        import torch

        if not self.path.is_file():
            return
        try:
            # `weights_only`: tensors and plain values only, so that a checkpoint cannot run code.
            saved = torch.load(self.path, map_location="cpu", weights_only=True)
        except (OSError, RuntimeError, EOFError, pickle.UnpicklingError) as error:
            raise UserError(
                f"cannot read the checkpoint {self.path} ({str(error).splitlines()[0]}); "
                "move it away to start this run afresh."
            ) from None
        changes = _changes(saved["config"], _plain(self.config))
        if changes:
            raise UserError(
                f"{self.path} is the checkpoint of a run with other settings ({'; '.join(changes)}); "
                "continue it with the settings it was started with, or choose another output directory."
            )
        self._saved, self.wandb_id = saved, saved["wandb_id"]

    def save(self, state: TrainingState) -> None:
        """Replace the checkpoint atomically: if saving fails, or the process dies, the previous one stays."""
        import torch

        contents = {
            "config": _plain(self.config),
            "model": state.model.state_dict(),
            "optimizer": state.optimizer.state_dict(),
            "epoch": state.epoch,
            "step": state.step,
            "history": state.history,
            # Every random number that training draws: the batch order from the generator, dropout
            # (and the initialisation, already done) from torch's global generators.
            "rng": {
                "batch_order": state.generator.get_state(),
                "cpu": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
            },
            "wandb_id": self.wandb_id,
        }
        try:
            write_atomically(self.path, lambda file: torch.save(contents, file))
        except OSError as error:
            raise UserError(
                f"could not save the checkpoint {self.path} ({error}); the one saved before, if any, is intact: make "
                f"room, then continue with: python main.py --experimental-rerun {os.path.relpath(self.path.parent)}"
            ) from None

    def restore(self, state: TrainingState) -> None:
        """Load the checkpoint, if there is one, into `state` and torch's random state."""
        import torch

        saved, self._saved = self._saved, None
        if saved is None:
            return
        state.model.load_state_dict(saved["model"])
        state.optimizer.load_state_dict(saved["optimizer"])
        state.epoch, state.step, state.history = saved["epoch"], saved["step"], saved["history"]
        state.generator.set_state(saved["rng"]["batch_order"])
        torch.set_rng_state(saved["rng"]["cpu"])
        if saved["rng"]["cuda"] and torch.cuda.is_available():  # a GPU run may continue on the CPU
            torch.cuda.set_rng_state_all(saved["rng"]["cuda"][: torch.cuda.device_count()])
        log.info(f"Continuing from {os.path.relpath(self.path)}: {state.epoch} epochs and {state.step} steps done.")


def write_atomically(path: Path, write: Callable[[IO[bytes]], object]) -> None:
    """Write a file through `write(file)` under a temporary name, then rename it: readers, and a later
    run, find the old file or the new one, never a partial one (a rename within a directory is atomic)."""
    temporary = path.with_name(f"{path.name}.tmp")
    try:
        with temporary.open("wb") as file:
            write(file)
            file.flush()
            # On the disk before the rename: a machine that crashes cannot leave an empty file behind.
            os.fsync(file.fileno())
        temporary.replace(path)
    finally:
        temporary.unlink(missing_ok=True)


# SLURM sends this signal to a job shortly before it preempts it or the job reaches its time limit, as
# submitit asks it to (`sbatch --signal=USR2@<signal_delay_s>`); submitit's handler then requeues the job.
SLURM_STOP_SIGNAL = signal.SIGUSR2


@dataclass(eq=False)
class StopRequest:
    """Filled in by `stop_on_signals()` when a signal asks training to stop after the current step."""

    requested: bool = False
    # Set when SLURM's signal asked: submitit's handler, deferred until the checkpoint is saved. It
    # requeues the job (which then continues from the checkpoint) and exits.
    requeue: Callable[[], object] | None = None


@contextmanager
def stop_on_signals() -> Generator[StopRequest]:
    """Within this block the first Ctrl-C (SIGINT), and in a SLURM job that submitit started its stop
    signal, only fill in the yielded StopRequest, which training checks after each step to stop cleanly;
    a second one of either is handled at once, as usual."""
    stop = StopRequest()
    if threading.current_thread() is not threading.main_thread():  # only the main thread gets signals
        yield stop
        return
    previous = {signal.SIGINT: signal.getsignal(signal.SIGINT) or signal.default_int_handler}
    slurm_handler = signal.getsignal(SLURM_STOP_SIGNAL)
    if callable(slurm_handler):  # submitit's; elsewhere the signal keeps its default action
        previous[SLURM_STOP_SIGNAL] = slurm_handler

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.requested = True
        handler = previous[signal.Signals(signum)]
        if signum == SLURM_STOP_SIGNAL and callable(handler):
            stop.requeue = lambda: handler(signum, frame)
        signal.signal(signum, handler)

    for signum in previous:
        signal.signal(signum, request_stop)
    try:
        yield stop
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


class OutputDirCheck(Callback):
    """A Hydra callback that stops a run whose output directory cannot be written to, with one line, before
    Hydra tries to create the directory (and fails with a traceback)."""

    @override
    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        _check_writable(Path(config.hydra.run.dir), "hydra.run.dir")

    @override
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        _check_writable(Path(config.hydra.sweep.dir), "hydra.sweep.dir")


def _check_writable(directory: Path, key: str) -> None:
    try:
        directory.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=directory).close()
    except OSError as error:
        # Hydra turns a callback's exceptions into warnings, and goes on; SystemExit is not one of them.
        sys.exit(f"Error: cannot write to the output directory {directory} ({error}); set {key} to a writable one.")


def _plain(config: dict[str, Any]) -> dict[str, Any]:
    """The config as plain values (paths and enums as strings), as a checkpoint stores it."""
    return json.loads(json.dumps(config, default=str))


def _changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """The settings that differ between two configs, as `key: old -> new`, but for MAY_CHANGE_ON_RESUME."""
    old, new = _flatten(old), _flatten(new)
    return [
        f"{key}: {old.get(key)} -> {new.get(key)}"
        for key in sorted(old.keys() | new.keys())
        if old.get(key) != new.get(key) and not key.startswith(MAY_CHANGE_ON_RESUME)
    ]


def _flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested config as dotted keys: {"opt": {"lr": 1}} -> {"opt.lr": 1}."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat |= _flatten(value, f"{prefix}{key}.")  # pyright: ignore[reportUnknownArgumentType]
        else:
            flat[f"{prefix}{key}"] = value
    return flat
