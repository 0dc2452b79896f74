"""Parallel jobs: a grid multirun of 4 jobs, 2 at once with `submitit_local`, against the same jobs one after another.

The grid is `seed=1,2 opt.lr=1e-4,1e-3` on the default settings (two epochs of MNIST) of a model, run:

- 2 at once: `hydra/launcher=submitit_local hydra.sweeper.max_batch_size=2`, each job a process of its own,
  which takes its share of the cores (`ThreadBudget`: half of them each, here);
- one after another: Hydra's basic launcher, which runs the jobs in the sweep's own process, each with every
  core (the baseline).

Each repetition times both multiruns end to end, in alternating order. The ratio is the median of the
per-repetition ratios of their wall times, the times the medians. Where a model's threads share its work
well, a job alone on every core is nearly as fast as two at once on half of them each, and each process
of the parallel sweep also starts Python and PyTorch anew. Target: 2 at once take at most the time of one
after another (ratio <= 1). Exits with 1 if missed.

    .venv/bin/python benchmarks/parallel_sweep.py [--models fcn cnn] [--repeats 2] [--data DIR]
"""

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

import torch

from common import REPO, interleaved, machine, print_table, timed_multirun, verdict

sys.path.insert(0, str(REPO))  # the project's `src` package, when run as `python benchmarks/parallel_sweep.py`

from src.datasets.cmnist import CMNISTDataModule, DigitSource

TARGET = 1.0
SEEDS = (1, 2)
GRID = [f"seed={','.join(map(str, SEEDS))}", "opt.lr=1e-4,1e-3"]
AT_ONCE = ["hydra/launcher=submitit_local", "hydra.sweeper.max_batch_size=2"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", choices=["fcn", "cnn"], default=["fcn", "cnn"])
    parser.add_argument("--repeats", type=int, default=2, help="repetitions per model (default: 2)")
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("HYDRA_EXAMPLE_DATA", REPO / "data")))
    args = parser.parse_args()
    root = args.data.resolve()
    for seed in SEEDS:  # the data caches, which the first job of each seed would otherwise build
        CMNISTDataModule(root=root, digits=DigitSource.MNIST).build(seed=seed)
    env = os.environ | {"HYDRA_EXAMPLE_DATA": str(root), "PYTHONPATH": str(REPO)}
    env.pop("OMP_NUM_THREADS", None)  # each job takes its share of the cores
    print(f"Machine: {machine()}; PyTorch {torch.__version__}")
    print(f"Grid: main.py --multirun model=MODEL {' '.join(GRID)}, 2 at once: {' '.join(AT_ONCE)}")
    print(f"Median of {args.repeats} repetitions, the order alternating.\n")

    with tempfile.TemporaryDirectory(prefix="hydra-example-parallel-") as tmp:
        scratch = Path(tmp)
        rows: list[list[str]] = []
        for model in args.models:
            grid = [f"model={model}", *GRID]
            pairs = interleaved(
                lambda grid=grid: timed_multirun([*grid, *AT_ONCE], scratch, env),
                lambda grid=grid: timed_multirun(grid, scratch, env),
                args.repeats,
            )
            ratio = statistics.median(at_once / one_by_one for at_once, one_by_one in pairs)
            rows.append(
                [
                    model,
                    f"{statistics.median(at_once for at_once, _ in pairs):.1f} s",
                    f"{statistics.median(one_by_one for _, one_by_one in pairs):.1f} s",
                    f"{ratio:.2f}",
                    f"<= {TARGET:.2f}",
                    verdict(ratio <= TARGET),
                ]
            )
    headers = ["model", "4 jobs, 2 at once (submitit_local)", "one after another (basic launcher)", "ratio"]
    print_table([*headers, "target", "result"], rows)
    sys.exit(0 if all(row[-1] == "PASS" for row in rows) else 1)


if __name__ == "__main__":
    main()
