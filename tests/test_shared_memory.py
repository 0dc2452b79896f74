"""Gradients averaged in shared memory (`SharedMemory`) by the processes of one run on one machine's
CPUs: the numbers that gloo gives, bit for bit, the same in every process, and no file left behind."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F

from src.model import FcnFactory
from src.training.distributed import World
from src.training.shared_memory import SHARED_MEMORY

pytestmark = pytest.mark.slow  # each test starts processes that import torch

STEPS = 5
BATCH = 64
TIMEOUT_S = 120


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _train(rank: int, size: int, local_size: int, port: int, results: Path) -> None:
    """A few steps of a 256-wide fcn in a world of `size` processes, `local_size` of them on this machine
    (fewer: as on several nodes, where gloo averages the gradients); this process's weights saved in
    `results`/RANK.pt."""
    torch.set_num_threads(1)
    world = World(
        rank=rank, size=size, local_rank=rank % local_size, local_size=local_size, rendezvous=("127.0.0.1", port)
    )
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(STEPS * BATCH, 3, 28, 28, generator=generator)
    labels = torch.randint(0, 10, (STEPS * BATCH,), generator=generator)
    torch.manual_seed(0)  # pyright: ignore[reportUnknownMemberType]
    model = FcnFactory(hidden_dim=256).build((3, 28, 28), out_dim=10)
    optimizer = torch.optim.AdamW(model.parameters())
    with world.joined(torch.device("cpu")):
        wrapped = world.wrap(model)
        for step in range(STEPS):
            batch = slice(step * BATCH, (step + 1) * BATCH)
            share = torch.arange(STEPS * BATCH)[batch][world.shard(BATCH)]
            loss = F.cross_entropy(wrapped(images[share]), labels[share], reduction="sum") * size / BATCH
            optimizer.zero_grad(set_to_none=True)
            loss.backward()  # pyright: ignore[reportUnknownMemberType]
            optimizer.step()  # pyright: ignore[reportUnknownMemberType]
    torch.save(list(model.parameters()), results / f"{rank}.pt")


def _weights(results: Path, *, size: int, local_size: int) -> list[list[torch.Tensor]]:
    """Each rank's weights after training in a world of `size` processes, `local_size` on this machine."""
    results.mkdir()
    context = mp.get_context("spawn")
    port = _free_port()
    processes = [context.Process(target=_train, args=(rank, size, local_size, port, results)) for rank in range(size)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=TIMEOUT_S)
        assert process.exitcode == 0
    return [torch.load(results / f"{rank}.pt") for rank in range(size)]


def _same(first: list[torch.Tensor], second: list[torch.Tensor]) -> bool:
    return all(torch.equal(a, b) for a, b in zip(first, second, strict=True))


def test_two_processes_average_as_gloo_does_bit_for_bit(tmp_path: Path) -> None:
    left_before = set(SHARED_MEMORY.glob("hydra-example-*"))
    shared = _weights(tmp_path / "shared", size=2, local_size=2)
    assert set(SHARED_MEMORY.glob("hydra-example-*")) <= left_before  # the shared memory went with the processes
    through_gloo = _weights(tmp_path / "gloo", size=2, local_size=1)
    assert _same(shared[0], shared[1])  # averaged: each process trained on its own half of every batch
    assert _same(shared[0], through_gloo[0])


def test_more_processes_all_get_the_same_average(tmp_path: Path) -> None:
    weights = _weights(tmp_path / "three", size=3, local_size=3)
    assert _same(weights[0], weights[1])
    assert _same(weights[0], weights[2])


def _train_alone(rank: int, port: int, results: Path) -> None:
    """Rank 1 ends as soon as both have joined; rank 0 takes a step, and writes down what stopped it."""
    world = World(rank=rank, size=2, local_rank=rank, local_size=2, rendezvous=("127.0.0.1", port))
    model = FcnFactory(hidden_dim=8).build((3, 28, 28), out_dim=10)
    try:
        with world.joined(torch.device("cpu")):
            wrapped = world.wrap(model)
            if rank == 1:
                os._exit(0)  # as a process that is killed: no goodbye to the others
            wrapped(torch.rand(4, 3, 28, 28)).sum().backward()  # pyright: ignore[reportUnknownMemberType]
    except Exception as error:
        (results / "error.txt").write_text(f"{type(error).__name__}: {error}")
        raise


def test_a_process_that_waits_for_one_that_ended_learns_it_within_seconds(tmp_path: Path) -> None:
    context = mp.get_context("spawn")
    port = _free_port()
    processes = [context.Process(target=_train_alone, args=(rank, port, tmp_path)) for rank in range(2)]
    for process in processes:
        process.start()
    # Rank 1 is not collected until rank 0 has ended: rank 0 finds a process that ended (a zombie), not none.
    processes[0].join(timeout=TIMEOUT_S)
    processes[1].join(timeout=TIMEOUT_S)
    assert processes[0].exitcode == 1
    # The error that `World.joined()` answers with its roll call, naming the rank that did not answer.
    assert (tmp_path / "error.txt").read_text().startswith("RunFailedError: rank 1 of 2 stopped during training")
