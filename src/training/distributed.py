"""One run trained by several processes at once: data parallel, over GPUs or CPU cores, on one or more nodes.

The processes are the tasks of one submitit job (`hydra.launcher.tasks_per_node`, `hydra.launcher.nodes`):
submitit starts them, on this machine or on the nodes of a SLURM job, and tells each its rank. Every
process holds the whole model and trains on its share of every batch; DistributedDataParallel averages
their gradients, so that they all take the same step and keep the same weights. Rank 0 writes what the run
leaves behind (log, checkpoint, metrics.json, W&B); the others only compute.

A run of one task has a `World` of size 1: no process group, and each method below then returns its
input or does nothing, so that such a run is exactly a run without this module.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable, Generator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import TypeVar, cast

import torch
import torch.distributed as dist
from torch import nn

# Public, documented API, which torch re-exports without listing it in `__all__`.
from torch.distributed import PrefixStore, Store, TCPStore  # pyright: ignore[reportPrivateImportUsage]

from src.common.errors import RunFailedError, UserError
from src.training.shared_memory import SharedMemory

__all__ = ["ONE_PROCESS", "World"]

log = logging.getLogger(__name__)
T = TypeVar("T")
# How long a process waits for the others, in a collective operation or to start: longer than anything one
# process does alone between two collectives (a training step, its share of an evaluation, rank 0 saving a
# checkpoint or starting W&B), short enough that one that hangs does not hold the job for long. A process
# that dies is noticed at once: its connections close.
COLLECTIVE_TIMEOUT = timedelta(minutes=5)
# When a collective fails, how long each process waits for the others to answer a roll call: those that
# do not are the ones that died (or hang), which the error then names.
ROLL_CALL_S = 10.0
BUCKET_MB = 25  # DistributedDataParallel's default: the gradients averaged at once, in MB


class World:
    """The processes that train one run together: this one's place among them, and what they do together."""

    def __init__(
        self,
        *,
        rank: int = 0,
        size: int = 1,
        local_rank: int = 0,
        local_size: int = 1,
        rendezvous: tuple[str, int] | None = None,  # rank 0's host and port, where the others find it
        task_logs: Path | None = None,  # where submitit writes the tasks' logs, named in errors
    ) -> None:
        self.rank, self.size, self.local_rank, self.local_size = rank, size, local_rank, local_size
        self._rendezvous, self._task_logs = rendezvous, task_logs
        self._control: dist.ProcessGroup | None = None  # gloo, for small messages: see `joined()`
        self._shared: SharedMemory | None = None  # see `wrap()`

    @classmethod
    def of_this_task(cls) -> World:
        """The world of this process: that of the submitit job it is a task of, or this process alone."""
        if "SUBMITIT_EXECUTOR" not in os.environ:
            return cls()
        from submitit import JobEnvironment
        from submitit.helpers import TorchDistributedEnvironment

        # submitit's helper reads SLURM's variables (or submitit_local's): ranks, nodes, rank 0's host, and
        # a port drawn from the job id, the same in every task.
        env = TorchDistributedEnvironment()
        if env.world_size == 1:
            return cls()
        return cls(
            rank=env.rank,
            size=env.world_size,
            local_rank=env.local_rank,
            local_size=env.local_world_size,
            rendezvous=(env.master_addr, env.master_port),
            task_logs=JobEnvironment().paths.folder,
        )

    @property
    def is_main(self) -> bool:
        """Whether this process is rank 0, the one that logs and writes the run's files."""
        return self.rank == 0

    def log_from_main_only(self) -> None:
        """Leave the run's log to rank 0: the others log only warnings and errors, and only to their own
        submitit log (their console), not to the log file in the output directory."""
        if self.is_main:
            return
        root = logging.getLogger()
        for handler in list(root.handlers):
            if isinstance(handler, logging.FileHandler):
                root.removeHandler(handler)
                handler.close()
        root.setLevel(logging.WARNING)

    def device(self, gpu: int) -> torch.device:
        """The device this process trains on: CUDA device `gpu`, or in a distributed run the GPU of this
        process's local rank (cuda:0 to cuda:N-1 for N processes on a node); the CPU when `gpu` is -1 or
        CUDA is not available."""
        if gpu == -1:
            return torch.device("cpu")
        if not torch.cuda.is_available():
            log.info("CUDA is not available; running on the CPU.")
            return torch.device("cpu")
        count = torch.cuda.device_count()
        if self.size == 1:
            if gpu >= count:
                raise UserError(
                    f"gpu={gpu} does not exist: this machine has {count} CUDA device(s), "
                    f"0 to {count - 1}; use gpu=-1 for the CPU."
                )
            return torch.device("cuda", gpu)
        if gpu != 0:
            raise UserError(
                f"gpu={gpu} names one GPU, but each of the {self.local_size} processes on a node trains on a GPU "
                "of its own (cuda:0 for local rank 0, and so on): keep gpu=0, or use gpu=-1 for the CPU."
            )
        if count < self.local_size:
            raise UserError(
                f"{self.local_size} processes on this node need {self.local_size} GPUs, one each, but it shows "
                f"{count}: ask for as many GPUs as tasks per node (hydra.launcher.gres=gpu:{self.local_size}), "
                "or for fewer tasks per node, or use gpu=-1 to train on CPUs."
            )
        return torch.device("cuda", self.local_rank)

    def prepare(self, model: nn.Module, device: torch.device, *, seed: int) -> nn.Module:
        """`model`, built with the same weights in every process, made ready to train in this world: its
        BatchNorm layers share their statistics over the processes, and each process draws its own dropout
        masks from here on."""
        if self.size == 1:
            return model
        if any(isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)) for module in model.modules()):
            # Each process would normalise with the statistics of its share of the batch alone: the result
            # would depend on the number of processes.
            if device.type != "cuda":
                raise UserError(
                    f"model.norm=BN in a run of {self.size} processes on CPUs: SyncBatchNorm, which normalises "
                    "over the whole batch, needs GPUs; use model.norm=LN, GPUs, or one task."
                )
            model = cast(nn.Module, nn.SyncBatchNorm.convert_sync_batchnorm(model))  # pyright: ignore[reportUnknownMemberType]
        # A seed for each rank, far from those that runs are given.
        torch.manual_seed(seed + (self.rank << 32))  # pyright: ignore[reportUnknownMemberType]
        return model

    @contextmanager
    def joined(self, device: torch.device) -> Generator[None]:
        """Within this block, this process is one of the process group: NCCL between GPUs, gloo between
        CPUs. A collective that fails because another process died or hangs ends the run with one line that
        names that process."""
        if self.size == 1:
            yield
            return
        backend = "nccl" if device.type == "cuda" else "gloo"
        assert self._rendezvous is not None
        host, port = self._rendezvous
        try:
            # Rank 0 holds the store through which the processes find each other; the roll call uses it too.
            store = TCPStore(host, port, self.size, is_master=self.is_main, timeout=COLLECTIVE_TIMEOUT)
            if device.type == "cuda":
                torch.cuda.set_device(device)
            dist.init_process_group(
                backend, store=store, rank=self.rank, world_size=self.size, timeout=COLLECTIVE_TIMEOUT
            )
        except (RuntimeError, dist.DistError) as error:
            raise UserError(
                f"rank {self.rank} of {self.size}: the processes of this run did not all start together within "
                f"{COLLECTIVE_TIMEOUT} ({str(error).splitlines()[0]}); {self._see_logs()}"
            ) from None
        # Small messages (the stop flag, random states) go between CPUs, even where the gradients go between
        # GPUs, so that they never wait for a GPU.
        control = dist.new_group(backend="gloo") if backend == "nccl" else dist.group.WORLD
        assert isinstance(control, dist.ProcessGroup)
        self._control = control
        nodes = self.size // self.local_size
        log.info(
            f"Data parallel: {self.size} processes on {nodes} node(s), {backend}; "
            "each trains on its share of every batch, rank 0 writes the results."
        )
        try:
            yield
        except Exception as error:
            # Left as it is: with another process gone, the group cannot be taken down in step.
            lost = _lost_process(error) and self._roll_call(store)
            if lost:
                ranks = ("rank " if len(lost) == 1 else "ranks ") + ", ".join(map(str, lost))
                raise RunFailedError(
                    f"{ranks} of {self.size} stopped during training (it ended, or hangs); "
                    f"{self._see_logs()}; the run continues from its last checkpoint when started again."
                ) from None
            raise
        dist.destroy_process_group()
        self._control = self._shared = None

    def wrap(self, model: nn.Module) -> nn.Module:
        """`model` for training: DistributedDataParallel, which averages the gradients over the processes
        as backward computes them, or `model` itself in a run of one process. Processes on the CPUs of one
        Linux machine average them, and agree on stopping, in memory they share (`SharedMemory`); the others
        through the backend."""
        if self.size == 1:
            return model
        device = next(model.parameters()).device
        if device.type == "cuda" or self.local_size < self.size or sys.platform != "linux":
            return nn.parallel.DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
        # The gradients are views of DistributedDataParallel's buckets, which the hook averages in place.
        wrapped = nn.parallel.DistributedDataParallel(model, gradient_as_bucket_view=True, bucket_cap_mb=BUCKET_MB)
        assert self._control is not None, "joined() comes first"
        self._shared = SharedMemory(
            model,
            rank=self.rank,
            size=self.size,
            group=self._control,
            bucket_bytes=BUCKET_MB << 20,
            timeout_s=COLLECTIVE_TIMEOUT.total_seconds(),
        )
        wrapped.register_comm_hook(None, self._shared.average)  # pyright: ignore[reportUnknownMemberType]
        return wrapped

    def shard(self, length: int) -> slice:
        """This process's share of `length` items: consecutive ones, as many as the others' or one fewer."""
        start, end = (length * rank // self.size for rank in (self.rank, self.rank + 1))
        return slice(start, end)

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """`tensor` summed over the processes (in place), the same in every process."""
        if self.size > 1:
            dist.all_reduce(tensor)
        return tensor

    def max(self, value: int) -> int:
        """The largest of the processes' `value`s."""
        return self.start_max(value)()

    def start_max(self, value: int) -> Callable[[], int]:
        """Start finding the largest of the processes' `value`s, in the background; the function returned
        waits for it. (In shared memory, found at once: that takes microseconds.)"""
        if self.size == 1:
            return lambda: value
        if self._shared is not None:
            return self._shared.start_max(value)
        tensor = torch.tensor(value)
        work = dist.all_reduce(tensor, op=dist.ReduceOp.MAX, group=self._control, async_op=True)
        assert work is not None

        def result() -> int:
            work.wait()
            return int(tensor.item())

        return result

    def gather(self, value: T) -> list[T]:
        """Every process's `value` (any picklable object), by rank."""
        if self.size == 1:
            return [value]
        values: list[object] = [None] * self.size
        dist.all_gather_object(values, value, group=self._control)
        return cast(list[T], values)

    def wait_for_all(self) -> None:
        """Return once every process has got here."""
        if self.size > 1:
            dist.barrier(group=self._control)

    def _roll_call(self, store: Store) -> list[int]:
        """The ranks that do not answer within ROLL_CALL_S: whose process ended, or hangs."""
        roll = PrefixStore("roll call", store)
        try:
            roll.set(str(self.rank), "here")
            deadline = time.monotonic() + ROLL_CALL_S
            while True:
                missing = [rank for rank in range(self.size) if not roll.check([str(rank)])]
                if not missing or time.monotonic() > deadline:
                    return missing
                time.sleep(0.1)
        except (RuntimeError, dist.DistError):  # the store lives in rank 0's process
            return [0]

    def _see_logs(self) -> str:
        where = f" in {os.path.relpath(self._task_logs)}" if self._task_logs else ""
        return f"each task's log{where} says why"


# The world of a run of one process, which nothing changes.
ONE_PROCESS = World()


def _lost_process(error: Exception) -> bool:
    """Whether `error` is a collective failing because another process went away or did not answer, rather
    than an error of this process: torch raises those as RuntimeError, with the backend's message."""
    return isinstance(error, dist.DistError) or any(backend in str(error) for backend in ("gloo", "NCCL"))
