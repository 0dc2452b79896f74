"""Gradients averaged in shared memory, by the processes of one run that train on the CPUs of one machine.

Gloo would send each process's gradients to the others over TCP, through the kernel: for the default fcn,
22 MB after every step, which took a third of the step on a 2-core machine (docs/distributed.md). Processes
on one machine read each other's gradients in memory that they share instead: each writes its gradients,
divided by the number of processes, into a slot of its own, and then each adds up all the slots in the same
order, rank 0's first. Every process so gets the same average, and the one that gloo computes for two
processes, bit for bit (a/2 + b/2). For three or more, gloo adds in another order, so the last bits may
differ from its average; each run still gets the same numbers every time.
"""

import os
import shutil
import tempfile
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

# Public, documented API, which torch re-exports without listing it in `__all__`.
from torch.distributed import GradBucket  # pyright: ignore[reportPrivateImportUsage]

from src.common.errors import RunFailedError

__all__ = ["SharedMemoryAverage"]

# Where the processes map their slots: memory (tmpfs) on Linux, a file system elsewhere.
SHARED_MEMORY = Path("/dev/shm")
CACHE_LINE = 64  # bytes


class SharedMemoryAverage:
    """The memory in which the processes of `group`, all on this machine, average their gradients: `average` is
    a communication hook of DistributedDataParallel (`register_comm_hook`)."""

    def __init__(self, model: nn.Module, *, rank: int, size: int, group: dist.ProcessGroup, bucket_bytes: int) -> None:
        self.rank, self.size, self.group = rank, size, group
        # A bucket holds parameters until it reaches `bucket_bytes`: at most that plus the largest one.
        sizes = [parameter.numel() * parameter.element_size() for parameter in model.parameters()]
        slot = -(-min(sum(sizes), bucket_bytes + max(sizes)) // CACHE_LINE) * CACHE_LINE  # slots apart
        # Two sets of slots, used in turn: a process writes into one set while the others may still read the
        # other, so that one barrier per bucket keeps them apart.
        shape = (2, size, slot)
        names: list[str | None] = [_new_file(2 * size * slot) if rank == 0 else None]
        try:
            dist.broadcast_object_list(names, src=0, group=group)  # rank 0's file, which the others map too
            name = names[0]
            assert name is not None
            self.slots = torch.from_file(name, shared=True, size=2 * size * slot, dtype=torch.uint8).view(shape)
            dist.barrier(group=group)  # every process has mapped it
        finally:
            if rank == 0:  # the memory lives on while mapped, and goes with the last process that maps it
                Path(str(names[0])).unlink(missing_ok=True)
        self.calls = 0

    # Annotated as DistributedDataParallel checks, at run time: hence no `from __future__ import annotations`.
    def average(self, state: object, bucket: GradBucket) -> torch.futures.Future[torch.Tensor]:
        """Average the gradients of `bucket` over the processes, in place."""
        gradients = bucket.buffer()
        length = gradients.numel() * gradients.element_size()
        slots = [slot[:length].view(gradients.dtype) for slot in self.slots[self.calls % 2]]
        self.calls += 1
        torch.div(gradients, self.size, out=slots[self.rank])
        dist.barrier(group=self.group)  # every slot written
        torch.add(slots[0], slots[1], out=gradients)
        for slot in slots[2:]:
            gradients.add_(slot)
        averaged: torch.futures.Future[torch.Tensor] = torch.futures.Future()
        averaged.set_result(gradients)
        return averaged


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
