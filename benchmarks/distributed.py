"""Data parallel on this machine's CPUs: an epoch trained by two processes against the same epoch by one.

An epoch is what `fit()` does per epoch (see benchmarks/training.py): CMNIST's 48,000 training images
in batches of 256, then the validation metrics. Two processes (as `hydra.launcher.tasks_per_node=2`
runs them: each with its share of the cores, `ThreadBudget`, and the gradients averaged in shared memory,
`SharedMemory`), against one process with all of them as PyTorch threads (as `python main.py`
runs), and against one process with as many threads as each of the two (the work of two processes, done
by one). The global batch, the weights, the batch order and so the result are the same, which the
validation accuracies printed side by side show. A last column shows two processes that average the
gradients through gloo instead (as processes on different machines do), and whether their metrics are the
ones of the shared memory, bit for bit.

The two processes also agree after each step on whether a signal asked any of them to stop (an integer
exchanged in the shared memory; through gloo, an all-reduce in the background during the next step), so that
all stop after the same step. Its cost is measured directly: the time that rank 0 spends in it, as a share
of the epoch.

Each repetition times one epoch of each, in alternating order; the processes of the distributed epoch
are started anew each time, and their clock starts once both are ready. The ratios are medians of the
per-repetition ratios, the times the fastest. On CPUs, two processes are no faster in principle than one
with as many threads: the first ratio is the price of the data-parallel machinery (the gradients'
exchange, the agreement, the optimiser's step done by each process), which GPUs, each running a process of
its own, turn into a speed-up; the second is the speed-up from a second process (0.5 at best). Targets:
two processes take at most 1.25 times as long as one with every core, and the agreement at most 5% of an
epoch. Exits with 1 if missed.

    .venv/bin/python benchmarks/distributed.py [--models fcn cnn] [--repeats 3]
"""

import argparse
import os
import socket
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.multiprocessing as mp

from common import REPO, machine, median_ratio, print_table, verdict

sys.path.insert(0, str(REPO))  # the project's `src` package, when run as `python benchmarks/distributed.py`

from src.datasets.cmnist import CMNISTDataModule, DigitSource
from src.model import FcnFactory, ModelFactory, SimpleCNNFactory
from src.optimisation import OptimisationCfg
from src.training.distributed import World
from src.training.loop import TrainingState, fit
from src.training.stopping import StopRequest
from src.training.threads import choose_threads

TARGET = 1.25  # two processes against one with every core
AGREEING_TARGET = 0.05
SEED = 42
MODELS: dict[str, ModelFactory] = {"fcn": FcnFactory(), "cnn": SimpleCNNFactory()}


@dataclass(frozen=True)
class Settings:
    """What one measurement trains, and how."""

    data: Path
    model: str
    threads: int | None  # PyTorch's threads in each process; None: its share of the cores (`choose_threads()`)


@dataclass(frozen=True)
class Epoch:
    seconds: float
    agreeing: float  # of which agreeing on stopping
    metrics: dict[str, float]  # the validation metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds per model (default: 3)")
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("HYDRA_EXAMPLE_DATA", REPO / "data")))
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0))
    _epoch(Settings(args.data, args.models[0], threads=cores), World())  # builds the data cache, untimed
    print(f"Machine: {machine()}; PyTorch {torch.__version__}")
    print(f"One epoch, batch 256: one process with {cores} or {cores // 2} threads, or two with their share each.")
    print(f"Times: the fastest of {args.repeats}; ratio and share: the median over {args.repeats} rounds.\n")

    rows: list[list[str]] = []
    for model in args.models:
        one: list[Epoch] = []
        one_half: list[Epoch] = []  # one process, half the threads
        two: list[Epoch] = []
        two_gloo: list[Epoch] = []  # two processes that average the gradients through gloo
        for repeat in range(args.repeats):
            measurements = [
                (one, lambda model=model: _epoch(Settings(args.data, model, threads=cores), World())),
                (one_half, lambda model=model: _epoch(Settings(args.data, model, threads=cores // 2), World())),
                (two, lambda model=model: _two_processes(Settings(args.data, model, threads=None))),
                (two_gloo, lambda model=model: _two_processes(Settings(args.data, model, cores // 2), gloo=True)),
            ]
            for epochs, measure in measurements if repeat % 2 == 0 else reversed(measurements):
                epochs.append(measure())
        ratio = _ratio(two, one)
        share = statistics.median(epoch.agreeing / epoch.seconds for epoch in two)
        bit_for_bit = all(a.metrics == b.metrics for a, b in zip(two, two_gloo, strict=True))
        same = "the same metrics" if bit_for_bit else "OTHER METRICS"
        rows.append(
            [
                model,
                *(f"{min(epoch.seconds for epoch in epochs):.2f} s" for epochs in (two, one, one_half)),
                *(f"{_ratio(two, epochs):.2f}" for epochs in (one, one_half)),
                f"{share:.2%}",
                f"<= {TARGET} and <= {AGREEING_TARGET:.0%}",
                verdict(ratio <= TARGET and share <= AGREEING_TARGET),
                f"{one[0].metrics['val/acc']:.4f} / {two[0].metrics['val/acc']:.4f}",
                f"{min(epoch.seconds for epoch in two_gloo):.2f} s ({_ratio(two_gloo, one):.2f}), {same}",
            ]
        )
    headers = ["model", "2 processes, their share each", f"1 process, {cores} threads"]
    headers += [f"1 process, {cores // 2} thread(s)", "ratio to the first", "to the second", "agreeing to stop"]
    headers += ["target", "result", "val/acc 1 / 2", "2 processes through gloo (ratio)"]
    print_table(headers, rows)
    sys.exit(0 if all(row[8] == "PASS" and row[10].endswith("the same metrics") for row in rows) else 1)


def _ratio(ours: list[Epoch], baseline: list[Epoch]) -> float:
    return median_ratio([(a.seconds, b.seconds) for a, b in zip(ours, baseline, strict=True)])


def _two_processes(settings: Settings, *, gloo: bool = False) -> Epoch:
    """One epoch trained by two new processes; what rank 0 measured. `gloo`: they average the gradients
    through gloo, as processes on two machines do."""
    context = mp.get_context("spawn")
    results = context.SimpleQueue()
    port = _free_port()
    workers = [context.Process(target=_worker, args=(rank, port, settings, gloo, results)) for rank in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
        if worker.exitcode != 0:
            sys.exit(f"a benchmark process failed (exit status {worker.exitcode})")
    return results.get()


def _worker(rank: int, port: int, settings: Settings, gloo: bool, results: Any) -> None:
    # Through gloo: as if each process were on a machine of its own (its threads: the share of two, set).
    local_size = 1 if gloo else 2
    world = World(
        rank=rank, size=2, local_rank=rank % local_size, local_size=local_size, rendezvous=("127.0.0.1", port)
    )
    epoch = _epoch(settings, world)
    if world.is_main:
        results.put(epoch)


def _epoch(settings: Settings, world: World) -> Epoch:
    """Train for one epoch in `world`, as `run()` does; the seconds from the first step to the end of the
    validation, and of them those spent agreeing on stopping."""
    choose_threads(settings.threads, tasks=world.local_size).use()
    cpu = torch.device("cpu")
    data = CMNISTDataModule(root=settings.data, digits=DigitSource.MNIST).build(seed=SEED)
    torch.manual_seed(SEED)  # pyright: ignore[reportUnknownMemberType]
    model = world.prepare(MODELS[settings.model].build(data.input_shape, out_dim=data.num_classes), cpu, seed=SEED)
    opt = OptimisationCfg(epochs=1)
    state = TrainingState(
        model=model, optimizer=opt.build(model.parameters()), generator=torch.Generator().manual_seed(SEED)
    )
    stop = StopRequest()
    agreeing = 0.0

    def stop_requested() -> bool:
        nonlocal agreeing
        start = time.perf_counter()
        agreed = stop.agree(world)
        agreeing += time.perf_counter() - start
        return agreed

    with world.joined(cpu):
        world.wait_for_all()  # both ready: the clock starts together
        start = time.perf_counter()
        fit(state, data, opt=opt, on_epoch_end=lambda _state: None, stop_requested=stop_requested, world=world)
        seconds = time.perf_counter() - start
    return Epoch(seconds, agreeing, state.history[-1])


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


if __name__ == "__main__":
    main()
