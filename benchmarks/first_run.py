"""The newcomer's first command: `python main.py` (what `make run` runs) where there is no data yet, then
the same command again, and where the time goes.

Each repetition runs the default run in a new, empty folder, as a fresh clone would: MNIST is not on disk,
so the run downloads it or, offline, makes synthetic digits, and caches the prepared data; the second run
reads that cache. Each figure is the wall time of a whole process, from its start to its exit. The split
comes from the run's own log (`main.log`, whose lines carry times to the millisecond):

- start-up: Python, Hydra and the config, until `Starting a run`;
- data: importing PyTorch, choosing the device, preparing (or reading) the data, building the model;
- training: the epochs, each with its validation and its checkpoint;
- test: the evaluation on the test split;
- exit: writing metrics.json, and the process ending.

For scale, `import torch` alone is timed in a fresh process too. Figures are medians over the repetitions.
The default run uses GPU 0 where there is one. Target: the first run under 30 s. Exits with 1 if missed.

    .venv/bin/python benchmarks/first_run.py [--repeats 3] [ARGS ...]

ARGS are Hydra overrides passed to both runs (e.g. `gpu=-1`).
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from itertools import pairwise
from pathlib import Path

from common import REPO, machine, print_table, timed, verdict

TARGET_S = 30.0
PHASES = ("start-up", "data", "training", "test", "exit")
# The log lines that end each phase but the last (the process's exit).
PHASE_ENDS = ("Starting a run", "Model architecture", None, "Test:")  # None: the last `Epoch` line


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3, help="pairs of runs, each in a new folder (default: 3)")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for both runs")
    args = parser.parse_args()
    print(f"Machine: {machine()}; {_gpu()}")
    print(f"Command: python main.py {' '.join(args.overrides)}".rstrip())
    print(f"Medians of {args.repeats} pairs of runs, each pair in a new, empty folder.\n")

    runs: dict[str, list[dict[str, float]]] = {"first": [], "second": []}
    sources: set[str] = set()
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory(prefix="hydra-example-first-run-") as folder:
            for name, splits in runs.items():
                split, source = _run(Path(folder), name, args.overrides)
                splits.append(split)
                sources.add(source)
    import_s = statistics.median(
        timed(lambda: subprocess.run([sys.executable, "-c", "import torch"], check=True)) for _ in range(args.repeats)
    )

    medians = {
        name: {key: statistics.median(split[key] for split in splits) for key in splits[0]}
        for name, splits in runs.items()
    }
    print(f"Data: {', '.join(sorted(sources))}; `import torch` alone: {import_s:.2f} s\n")
    print_table(
        ["run", "total", *PHASES, "target", "result"],
        [
            [
                f"{name} ({'no data yet' if name == 'first' else 'data cached'})",
                f"{split['total']:.1f} s",
                *(f"{split[phase]:.1f} s" for phase in PHASES),
                f"< {TARGET_S:.0f} s" if name == "first" else "",
                verdict(split["total"] < TARGET_S) if name == "first" else "",
            ]
            for name, split in medians.items()
        ],
    )
    sys.exit(0 if medians["first"]["total"] < TARGET_S else 1)


def _run(folder: Path, name: str, overrides: list[str]) -> tuple[dict[str, float], str]:
    """Run `main.py` in `folder` (data in ./data, as `make run` has it); its phases in seconds, and its data."""
    environment = {key: value for key, value in os.environ.items() if key != "HYDRA_EXAMPLE_DATA"}
    started = time.time()
    subprocess.run(
        [sys.executable, str(REPO / "main.py"), *overrides, f"hydra.run.dir={name}"],
        cwd=folder,
        env=environment | {"WANDB_SILENT": "true"},
        check=True,
        capture_output=True,
    )
    ended = time.time()
    lines = (folder / name / "main.log").read_text().splitlines()
    logged = [(_time(line), line) for line in lines if line.startswith("[")]
    epochs = [when for when, line in logged if "] - Epoch " in line]
    ends = [
        epochs[-1] if marker is None else next(when for when, line in logged if f"] - {marker}" in line)
        for marker in PHASE_ENDS
    ]
    bounds = [started, *ends, ended]
    split = {phase: end - start for phase, (start, end) in zip(PHASES, pairwise(bounds), strict=True)}
    source = "synthetic digits" if any("SYNTHETIC" in line for _, line in logged) else "MNIST"
    return split | {"total": ended - started}, source


def _time(line: str) -> float:
    """The time of a line of Hydra's log file, `[2026-01-01 12:00:00,123][logger][LEVEL] - message`."""
    return datetime.strptime(line[1:24], "%Y-%m-%d %H:%M:%S,%f").timestamp()


def _gpu() -> str:
    import torch

    return f"GPU: {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else "no GPU"


if __name__ == "__main__":
    main()
