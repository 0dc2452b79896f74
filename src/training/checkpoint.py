"""Nothing lost: a checkpoint after every epoch, from which a stopped run continues.

A checkpoint holds everything that decides what training does next: the model, the optimiser, the
progress (epoch, step, metrics so far), the random states and the W&B run id. A run started again in
the same output directory continues from it, and ends with the same result, bit for bit on the CPU, as
a run that was never stopped.
"""

from __future__ import annotations

import logging
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from src.common.errors import UserError
from src.common.files import write_atomically
from src.common.os_errors import os_error_line
from src.common.paths import shown
from src.records.identity import changed_settings, code_label, plain_config
from src.records.metrics import RunResult
from src.records.run_directory import how_to_continue

if TYPE_CHECKING:
    from src.data import Data
    from src.training.distributed import World
    from src.training.loop import Metrics, TrainingState

__all__ = ["CHECKPOINT_FILE", "Checkpoint"]

log = logging.getLogger(__name__)
CHECKPOINT_FILE = "checkpoint.pt"
# What every checkpoint holds (see `save()`).
CONTENTS = {"config", "data", "model", "optimizer", "epoch", "step", "history", "rng", "wandb_id"}


def _one_process() -> World:
    from src.training.distributed import ONE_PROCESS  # it imports torch, which `--help` must not wait for

    return ONE_PROCESS


@dataclass(eq=False, kw_only=True)
class Checkpoint:
    """The checkpoint of one run. Made before training, it reads the checkpoint that a stopped run left,
    if any, and checks that it is one of the same config; `restore()` then loads it into the training
    state, and `save()` replaces it after each epoch."""

    path: Path
    config: dict[str, Any]  # the resolved config: a checkpoint is only continued with the same one
    # The processes that train the run: rank 0 writes the checkpoint, every one reads it.
    world: World = field(default_factory=_one_process)
    wandb_id: str | None = None  # the W&B run to continue, if any; set when W&B starts
    data: dict[str, str] = field(default_factory=dict[str, str])  # the data's identity; set by `bind_data()`
    # The code of each part of the run, oldest first: one entry, unless it was continued with other code.
    code: list[dict[str, Any]] = field(default_factory=list[dict[str, Any]])
    _saved: dict[str, Any] | None = field(default=None, init=False, repr=False)  # what `restore()` loads

    def __post_init__(self) -> None:
        if not self.path.exists():
            return
        saved = _read(self.path)
        changes = changed_settings(saved["config"], plain_config(self.config))
        if changes:
            raise UserError(
                f"{shown(self.path)} is the checkpoint of a run with other settings ({'; '.join(changes)}); "
                "continue it with the settings it was started with, or choose another output directory."
            )
        saved_size = len(saved["rng"]["processes"])
        if saved_size != self.world.size:
            raise UserError(
                f"{shown(self.path)} is the checkpoint of a run of {saved_size} process(es), each with its own random "
                f"state; continue it with {saved_size} (hydra.launcher.tasks_per_node times hydra.launcher.nodes), "
                f"not {self.world.size}, or choose another output directory."
            )
        # Checkpoints of the version before code identities have none.
        self._saved, self.wandb_id, self.code = saved, saved["wandb_id"], saved.get("code", [])

    def bind_data(self, data: Data) -> None:
        """Tie the checkpoint to the data this run prepared: a run continues only on the data it started
        with (the settings may allow other data: another dm.root; no MNIST files, and synthetic digits)."""
        self.data = {"source": data.source, "origin": data.origin, "fingerprint": data.fingerprint()}
        saved = self._saved["data"] if self._saved is not None else self.data
        if any(saved[key] != self.data[key] for key in ("source", "fingerprint")):
            what = "other data" if saved["source"] == data.source else f"{saved['source']} data, not {data.source}"
            raise UserError(
                f"{shown(self.path)} was trained on {what}: continue it on the data it started with (check dm.root "
                "and the files there), or choose another output directory."
            )

    def bind_code(self, code: dict[str, Any]) -> None:
        """Record the code that runs now (`code_identity()`). A run continued with other code (a bug fixed
        during a long sweep, say) goes on: said in one line, and recorded."""
        if self.code and _same_code(self.code[-1], code):
            self.code[-1] = code  # the same code, perhaps on another device
            return
        if self.code:
            log.warning(
                f"{shown(self.path)} was saved by other code ({code_label(self.code[-1])}) than this "
                f"({code_label(code)}): the run continues, and its metrics.json records both."
            )
        self.code.append(code)

    def result(self, status: str, epoch: int, metrics: Metrics) -> RunResult:
        """The run's result, with what it belongs to: the data and the code that the checkpoint is bound to."""
        code = self.code or [{}]  # known to rank 0 alone, which writes the results
        return RunResult(status, epoch, metrics, self.data, code=code[-1], code_before=code[:-1])

    def save(self, state: TrainingState) -> None:
        """Replace the checkpoint atomically: if saving fails, or the process dies, the previous one stays.
        In a distributed run every process calls it, and it returns once rank 0 has saved."""
        import torch

        # Every random number that training draws: the batch order from the generator (the same in every
        # process), dropout (and the initialisation, already done) from torch's global generators, in each.
        processes = self.world.gather(
            {
                "cpu": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
            }
        )
        if self.world.is_main:
            self._write(state, processes)
        self.world.wait_for_all()

    def _write(self, state: TrainingState, processes: list[dict[str, Any]]) -> None:
        import torch

        contents = {
            "config": plain_config(self.config),
            "data": self.data,
            "model": state.model.state_dict(),
            "optimizer": state.optimizer.state_dict(),
            "epoch": state.epoch,
            "step": state.step,
            "history": state.history,
            "rng": {"batch_order": state.generator.get_state(), "processes": processes},
            "wandb_id": self.wandb_id,
            "code": self.code,
        }
        try:
            write_atomically(self.path, lambda file: torch.save(contents, file))
        except (OSError, RuntimeError) as error:
            continuing = f"the one saved before, if any, is intact; to continue, {how_to_continue(self.path.parent)}"
            path_problem = os_error_line(error)  # a folder where the file goes, say: what to do about it
            if path_problem is not None:
                raise UserError(f"could not save the checkpoint: {path_problem} And {continuing}") from None
            # A write that fails part of the way (a full disk) is a RuntimeError from torch's zip writer.
            reason = (
                str(error) if isinstance(error, OSError) else "torch.save could not write it all: is the disk full?"
            )
            raise UserError(
                f"could not save the checkpoint {shown(self.path)} ({reason}); the one saved before, if any, is "
                f"intact: make room, then to continue, {how_to_continue(self.path.parent)}"
            ) from None

    def ended_with(self, metrics: Metrics, *, epochs: int) -> bool:
        """Whether this is the last checkpoint of a run of `epochs` epochs that ended with `metrics`: its
        last epoch's validation metrics are among them. (A metrics.json left in the directory by an earlier
        run, whose checkpoint was deleted to start afresh, is not this run's.)"""
        saved = self._saved
        return saved is not None and saved["epoch"] == epochs and saved["history"][-1].items() <= metrics.items()

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
        rng = saved["rng"]["processes"][self.world.rank]
        torch.set_rng_state(rng["cpu"])
        if rng["cuda"] and torch.cuda.is_available():  # a GPU run may continue on the CPU
            torch.cuda.set_rng_state_all(rng["cuda"][: torch.cuda.device_count()])
        done = f"{_plural(state.epoch, 'epoch')} and {_plural(state.step, 'step')} done"
        log.info(f"Continuing from {shown(self.path)}: {done}.")


def _read(path: Path) -> dict[str, Any]:
    """The contents of a checkpoint file, or a UserError that says why it is none of ours."""
    import torch

    if not path.is_file():
        raise UserError(f"{shown(path)} is not a file: move it away, so that the run can save its checkpoint there.")
    try:
        # `weights_only`: tensors and plain values only, so that a checkpoint cannot run code.
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        # Not torch's advice to load it with weights_only=False, which would run the code it may hold.
        if "Unsupported global" in str(error):
            problem = "it holds objects other than tensors and plain values, which are not loaded: they could run code"
        else:
            problem = "it is not a file that torch.save wrote"
    except EOFError:
        problem = "it is empty" if path.stat().st_size == 0 else "it is cut short"
    except OSError as error:
        problem = str(error)
    except Exception:  # a file of anything: torch.load raises many kinds of error, none of them telling
        problem = "it is not a file that torch.save wrote"
    else:
        if isinstance(saved, dict) and saved.keys() >= CONTENTS:
            return cast(dict[str, Any], saved)
        if isinstance(saved, dict) and saved.keys() >= CONTENTS - {"data"}:
            problem = "an earlier version of this program saved it, without the fingerprint of its data"
        else:
            problem = "it is not a checkpoint of this program"
    raise UserError(f"cannot read the checkpoint {shown(path)} ({problem}); move it away to start this run afresh.")


def _plural(count: int, noun: str) -> str:
    """1 epoch, 2 epochs."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _same_code(old: dict[str, Any], new: dict[str, Any]) -> bool:
    """Whether two code identities are of the same code (wherever it runs)."""
    return {key: value for key, value in old.items() if key != "device"} == {
        key: value for key, value in new.items() if key != "device"
    }
