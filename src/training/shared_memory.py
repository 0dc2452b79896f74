"""Memory shared by the processes of one run that train on the CPUs of one machine: they average their gradients
in it, and agree in it on whether to stop, without the kernel.

Gloo would send each process's gradients to the others over TCP, through the kernel: for the default fcn,
22 MB after every step, which took a third of the step on a 2-core machine (docs/distributed.md). And each of
gloo's operations, small ones too, hands the work to a thread of gloo's and wakes the other processes' threads
through the kernel, about a millisecond each time: a cnn's step takes 15 ms. Here each process writes its
gradients, divided by the number of processes, into a slot of its own, says that it has arrived by writing a
count in a line of its own, and waits, polling, until all have; each then adds up all the slots in the same
order, rank 0's first. Every process so gets the same average, and the one that gloo computes for two
processes, bit for bit (a/2 + b/2). For three or more, gloo adds in another order, so the last bits may
differ from its average; each run still gets the same numbers every time.

A process that waits gives its core to any other that may need it (`os.sched_yield()`), which is also where
Linux's scheduler orders memory (a full barrier): a process's writes are seen by the others before its count,
on any processor.
"""

import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

# Public, documented API, which torch re-exports without listing it in `__all__`.
from torch.distributed import GradBucket  # pyright: ignore[reportPrivateImportUsage]

from src.common.errors import RunFailedError

__all__ = ["SharedMemory"]

# Where the processes map their memory: memory (tmpfs) on Linux, a file system elsewhere.
SHARED_MEMORY = Path("/dev/shm")
CACHE_LINE = 64  # bytes: each process writes its own lines, so that none slows down another's
# A process's line holds its arrivals, its process id and the values it tells the others (two, used in turn).
ARRIVALS, PROCESS_ID, VALUES = 0, 1, 2
LINE = CACHE_LINE // 8  # int64 words
# How often a process that waits checks that the others still exist: a process that ended never arrives.
CHECK_S = 1.0


class SharedMemory:
    """The memory in which the processes of `group`, all on this machine, average their gradients (`average`,
    a communication hook of DistributedDataParallel: `register_comm_hook`) and exchange small values
    (`start_max`)."""

    def __init__(
        self, model: nn.Module, *, rank: int, size: int, group: dist.ProcessGroup, bucket_bytes: int, timeout_s: float
    ) -> None:
        self.rank, self.size, self.timeout_s = rank, size, timeout_s
        # A bucket holds parameters until it reaches `bucket_bytes`: at most that plus the largest one.
        sizes = [parameter.numel() * parameter.element_size() for parameter in model.parameters()]
        slot = -(-min(sum(sizes), bucket_bytes + max(sizes)) // CACHE_LINE) * CACHE_LINE  # slots apart
        # Two sets of slots (and values), used in turn: a process writes into one set while the others may
        # still read the other, so that one wait for all per exchange keeps them apart.
        lines, slots = size * CACHE_LINE, 2 * size * slot
        names: list[str | None] = [_new_file(lines + slots) if rank == 0 else None]
        try:
            dist.broadcast_object_list(names, src=0, group=group)  # rank 0's file, which the others map too
            name = names[0]
            assert name is not None
            memory = torch.from_file(name, shared=True, size=lines + slots, dtype=torch.uint8)
            self.lines = memory[:lines].view(torch.int64).view(size, LINE)
            self.slots = memory[lines:].view(2, size, slot)
            self.lines[rank, PROCESS_ID] = os.getpid()
            dist.barrier(group=group)  # every process has mapped it, and written its process id
        finally:
            if rank == 0:  # the memory lives on while mapped, and goes with the last process that maps it
                Path(str(names[0])).unlink(missing_ok=True)
        self.process_ids = [int(process_id) for process_id in self.lines[:, PROCESS_ID]]
        self.arrivals = 0

    # Annotated as DistributedDataParallel checks, at run time: hence no `from __future__ import annotations`.
    def average(self, state: object, bucket: GradBucket) -> torch.futures.Future[torch.Tensor]:
        """Average the gradients of `bucket` over the processes, in place."""
        gradients = bucket.buffer()
        length = gradients.numel() * gradients.element_size()
        slots = [slot[:length].view(gradients.dtype) for slot in self.slots[self.arrivals % 2]]
        torch.div(gradients, self.size, out=slots[self.rank])
        self._arrive_and_wait()  # every slot written
        torch.add(slots[0], slots[1], out=gradients)
        for slot in slots[2:]:
            gradients.add_(slot)
        averaged: torch.futures.Future[torch.Tensor] = torch.futures.Future()
        averaged.set_result(gradients)
        return averaged

    def start_max(self, value: int) -> Callable[[], int]:
        """The largest of the processes' `value`s, exchanged now; the function returned gives it."""
        values = VALUES + self.arrivals % 2
        self.lines[self.rank, values] = value
        self._arrive_and_wait()
        largest = int(self.lines[:, values].max())
        return lambda: largest

    def _arrive_and_wait(self) -> None:
        """Say that this process has arrived, and return once every process has; raise dist.DistError when one
        ends first, or does not arrive within `timeout_s`."""
        os.sched_yield()  # this process's writes are seen before its arrival
        self.arrivals += 1
        self.lines[self.rank, ARRIVALS] = self.arrivals
        start = checked = time.monotonic()
        while int(self.lines[:, ARRIVALS].min()) < self.arrivals:
            os.sched_yield()
            now = time.monotonic()
            if now - checked > CHECK_S:
                checked = now
                self._check_others(waited_s=now - start)

    def _check_others(self, *, waited_s: float) -> None:
        late = [rank for rank in range(self.size) if int(self.lines[rank, ARRIVALS]) < self.arrivals]
        ended = [rank for rank in late if not _exists(self.process_ids[rank])]
        if ended or waited_s > self.timeout_s:
            raise dist.DistError(f"shared memory: rank(s) {ended or late} did not arrive within {waited_s:.0f} s")


def _exists(process_id: int) -> bool:
    """Whether the process `process_id` still runs: it exists, and has not ended waiting for its parent to
    collect its exit status (a zombie, state Z)."""
    try:
        status = Path(f"/proc/{process_id}/stat").read_text()
    except OSError:
        return False
    return status.rpartition(")")[2].split()[0] != "Z"  # the state follows the name, which may hold spaces


def _new_file(size: int) -> str:
    """A new file of `size` bytes: in memory (SHARED_MEMORY) where it has room, else in the temporary directory,
    whose pages the processes that map it share as well."""
    room = SHARED_MEMORY.is_dir() and shutil.disk_usage(SHARED_MEMORY).free >= size
    descriptor, name = tempfile.mkstemp(prefix="hydra-example-", dir=SHARED_MEMORY if room else None)
    try:
        # Taken now: a process that wrote into a page for which there is no room would die (SIGBUS).
        os.posix_fallocate(descriptor, 0, size)
    except OSError as error:
        Path(name).unlink()
        raise RunFailedError(
            f"no room for the {size / 1e6:.0f} MB in which the processes of this run average their gradients "
            f"({Path(name).parent}: {error.strerror}): free some, or point TMPDIR at a directory with room."
        ) from None
    finally:
        os.close(descriptor)
    return name
