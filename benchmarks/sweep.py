"""Sweep overhead: what a job of a local `--multirun` costs beyond its own training.

The grid is six jobs with the same data settings: `model.num_hidden=1,2,3 opt.lr=1e-4,1e-3` on a
small fcn (`model.hidden_dim=128`, one epoch, `seed=1`), run by Hydra's basic launcher, which runs the
jobs one after another in one process. Each repetition measures, side by side:

- T6, the wall time of the six-job multirun;
- T1, the wall time of a multirun of the first job alone;
- t_1 ... t_6, each job's training in this process: `fit()` for the epoch, then `evaluate()` on the
  test split, with the job's model, optimiser and data (read beforehand), which is all the computing
  that a job cannot avoid.

Overhead per job = (T6 - T1 - (t_2 + ... + t_6)) / 5: what jobs 2 to 6 cost beyond their training
(Hydra's job set-up and output directory, config and log files, building the model, the data they
should find already prepared, checkpoints, the summary). Subtracting T1 removes what a multirun pays
once, whatever its size: starting Python, importing PyTorch, starting Hydra, preparing the data for
the first job. The ratio is T6 / (T1 + t_2 + ... + t_6): the sweep against one run plus the bare
training of the other five (1.0: no overhead). Medians over repetitions, alternating their order.
Target: under 0.5 s a job. Exits with 1 if missed.

    .venv/bin/python benchmarks/sweep.py [--repeats 3] [--threads N]

`--threads` sets PyTorch's CPU threads in the runs (through OMP_NUM_THREADS) and in this process: on
a machine that other processes keep busy, one thread gives steadier figures than one per core.
"""

import argparse
import itertools
import os
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

from common import REPO, machine, print_table, timed, timed_multirun, verdict

sys.path.insert(0, str(REPO))  # the project's `src` package, when run as `python benchmarks/sweep.py`

from src.data import Data
from src.datasets.cmnist import CMNISTDataModule, DigitSource
from src.model import FcnFactory
from src.optimisation import OptimisationCfg
from src.training.loop import TrainingState, evaluate, fit

TARGET_S = 0.5
SEED = 1
HIDDEN_DIM = 128
NUM_HIDDEN = (1, 2, 3)
LRS = (1e-4, 1e-3)
FIXED = [f"seed={SEED}", "opt.epochs=1", f"model.hidden_dim={HIDDEN_DIM}"]
GRID = [*FIXED, f"model.num_hidden={','.join(map(str, NUM_HIDDEN))}", f"opt.lr={','.join(map(str, LRS))}"]
FIRST_JOB = [*FIXED, f"model.num_hidden={NUM_HIDDEN[0]}", f"opt.lr={LRS[0]}"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3, help="repetitions (default: 3)")
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("HYDRA_EXAMPLE_DATA", REPO / "data")))
    parser.add_argument("--threads", type=int, help="PyTorch's CPU threads (default: one per core)")
    args = parser.parse_args()
    env = dict(os.environ)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
        env["OMP_NUM_THREADS"] = str(args.threads)
    root = args.data.resolve()
    env["HYDRA_EXAMPLE_DATA"] = str(root)
    data = CMNISTDataModule(root=root, digits=DigitSource.MNIST).build(seed=SEED)  # and the cache, for the runs
    jobs = list(itertools.product(NUM_HIDDEN, LRS))  # job 1 first, as in FIRST_JOB
    print(f"Machine: {machine()}; PyTorch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    print(f"Grid: main.py --multirun {' '.join(GRID)}")
    print(f"Median of {args.repeats} repetitions.\n")

    _training(data, *jobs[0])  # warm-up, not counted: a process's first training pays one-off costs
    sweeps: list[float] = []
    singles: list[float] = []
    trainings: list[list[float]] = []
    with tempfile.TemporaryDirectory(prefix="hydra-example-sweep-") as tmp:
        steps: list[Callable[[], None]] = [
            lambda: sweeps.append(timed_multirun(GRID, Path(tmp), env)),
            lambda: singles.append(timed_multirun(FIRST_JOB, Path(tmp), env)),
            lambda: trainings.append([_training(data, num_hidden, lr) for num_hidden, lr in jobs]),
        ]
        for repeat in range(args.repeats):
            for step in steps if repeat % 2 == 0 else reversed(steps):
                step()
    others = [sum(times[1:]) for times in trainings]  # jobs 2 to 6
    overheads = [(t6 - t1 - rest) / (len(jobs) - 1) for t6, t1, rest in zip(sweeps, singles, others, strict=True)]
    ratios = [t6 / (t1 + rest) for t6, t1, rest in zip(sweeps, singles, others, strict=True)]
    overhead = statistics.median(overheads)
    print_table(
        ["T6 (6 jobs)", "T1 (job 1)", "t_2..t_6 (training)", "ratio", "overhead per job", "target", "result"],
        [
            [
                f"{statistics.median(sweeps):.2f} s",
                f"{statistics.median(singles):.2f} s",
                f"{statistics.median(others):.2f} s",
                f"{statistics.median(ratios):.3f}",
                f"{overhead:.2f} s",
                f"< {TARGET_S} s",
                verdict(overhead < TARGET_S),
            ]
        ],
    )
    once = statistics.median(t1 - times[0] for t1, times in zip(singles, trainings, strict=True))
    print(f"\nPaid once per multirun (T1 - t_1): {once:.2f} s")
    sys.exit(0 if overhead < TARGET_S else 1)


def _training(data: Data, num_hidden: int, lr: float) -> float:
    """Seconds of one job's training and testing, set up as `run()` sets it up."""
    torch.manual_seed(SEED)  # pyright: ignore[reportUnknownMemberType]
    model = FcnFactory(num_hidden=num_hidden, hidden_dim=HIDDEN_DIM).build(data.input_shape, out_dim=data.num_classes)
    opt = OptimisationCfg(lr=lr, epochs=1)
    state = TrainingState(
        model=model, optimizer=opt.build(model.parameters()), generator=torch.Generator().manual_seed(SEED)
    )

    def train_and_test() -> None:
        fit(state, data, opt=opt, on_epoch_end=lambda _state: None, stop_requested=lambda: False)
        evaluate(model, data.test, data.group_names, prefix="test")

    return timed(train_and_test)


if __name__ == "__main__":
    main()
