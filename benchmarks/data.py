"""Data preparation: CMNIST built from MNIST's files (no cache yet) against read back from the cache, and what
checking the cache costs.

Each repetition copies MNIST's raw files into a new, empty data folder and runs two fresh Python
processes there, one after the other: the first finds no cache and decodes, splits, colours (chooses
each digit's colour) and caches the data ("cold"), the second reads the cache ("warm"). Fresh
processes, so that nothing is kept in memory between them (the in-process memo that the cache
keeps for the jobs of a multirun included). Each process imports PyTorch and the project first, as a
run has done by the time it asks for its data, then times `CMNISTDataModule(...).build(seed=...)`
followed by reading one byte of every page of the tensors: the cache is memory-mapped, so `build()`
alone would return before the data is read, and the reading would be paid in the first epoch instead.

Each read checks the cache against the checksums written with it; the warm process then reads the cache
twice more, once without the check and once with it, and the difference is the check's cost, shown as a
share of the warm figure.

The figures are medians over the repetitions; the ratio is warm / cold. Target: warm under 1 s.
Exits with 1 if it is missed.

    .venv/bin/python benchmarks/data.py [--repeats 5] [--mnist DIR]

`--mnist` is a folder holding MNIST's `raw/` files (default: $HYDRA_EXAMPLE_DATA/MNIST, else
data/MNIST); it is only copied from, never written to.
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from common import REPO, machine, print_table, verdict

TARGET_S = 1.0
SEED = 42
# Run in a fresh process: argv[1] is the repository, argv[2] the data folder; prints the seconds taken.
# Prints the seconds taken, and those that checking the cache takes.
CHILD = """
import sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
import torch
from src.datasets import tensor_file
from src.datasets.cmnist import CMNISTDataModule, DigitSource

root = Path(sys.argv[2])
start = time.perf_counter()
data = CMNISTDataModule(root=root, digits=DigitSource.MNIST).build(seed=int(sys.argv[3]))
for split in (data.train, data.val, data.test):
    for tensor in (split.images, split.labels, split.groups):
        tensor.flatten().view(torch.uint8)[::4096].sum()  # one byte of every 4 KiB page
seconds = time.perf_counter() - start
[path] = (root / "cache").glob("*.tensors")
start = time.perf_counter()
tensor_file.read(path, check=False)
unchecked = time.perf_counter()
tensor_file.read(path)
print(seconds, (time.perf_counter() - unchecked) - (unchecked - start))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5, help="cold and warm pairs (default: 5)")
    parser.add_argument(
        "--mnist", type=Path, default=Path(os.environ.get("HYDRA_EXAMPLE_DATA", REPO / "data")) / "MNIST"
    )
    args = parser.parse_args()
    files = sorted(path for path in (args.mnist / "raw").iterdir() if path.is_file())
    print(f"Machine: {machine()}")
    print(f"MNIST: the {len(files)} files of {args.mnist / 'raw'}")
    print(f"Median of {args.repeats} pairs, each in a new data folder.\n")

    cold: list[float] = []
    warm: list[float] = []
    checks: list[float] = []
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory(prefix="hydra-example-data-") as root:
            raw = Path(root) / "MNIST" / "raw"
            raw.mkdir(parents=True)
            for path in files:
                shutil.copyfile(path, raw / path.name)  # not copy2: the source may be read-only
            cold.append(_prepare(Path(root))[0])
            warm_s, check_s = _prepare(Path(root))
            warm.append(warm_s)
            checks.append(check_s)
    cold_s, warm_s, check_s = statistics.median(cold), statistics.median(warm), statistics.median(checks)
    ratio = statistics.median(w / c for w, c in zip(warm, cold, strict=True))
    print_table(
        ["figure", "warm (cache)", "cold (no cache)", "ratio", "target", "result"],
        [
            [
                "prepare CMNIST",
                f"{warm_s:.3f} s",
                f"{cold_s:.2f} s",
                f"{ratio:.3f}",
                f"< {TARGET_S:.0f} s",
                verdict(warm_s < TARGET_S),
            ],
            [f"of which checking the cache ({check_s / warm_s:.0%})", f"{check_s:.3f} s", "", "", "", ""],
        ],
    )
    sys.exit(0 if warm_s < TARGET_S else 1)


def _prepare(root: Path) -> tuple[float, float]:
    """Seconds that a fresh process spends getting CMNIST ready in `root`, and checking its cache."""
    result = subprocess.run(
        [sys.executable, "-c", CHILD, str(REPO), str(root), str(SEED)],
        capture_output=True,
        text=True,
        check=True,
    )
    seconds, check = result.stdout.splitlines()[-1].split()
    return float(seconds), float(check)


if __name__ == "__main__":
    main()
