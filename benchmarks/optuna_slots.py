"""Idle slots: an Optuna study on `submitit_local` with 2 slots, the plugin's batches against our sweeper.

The plugin's sweeper (`hydra/sweeper=optuna`) hands the launcher `n_jobs` trials at a time and waits for
the slowest of them; ours (`hydra/sweeper=resumable_optuna`, `ResumableOptunaSweeper`) starts a trial as
soon as a slot is free. The study searches `opt.epochs` over 1 to 4, so that its trials take very
different times (an fcn with `model.hidden_dim=256` on MNIST, a few seconds an epoch on a 2-core machine;
each job with its share of the cores, `ThreadBudget`: one thread where 2 slots share 2 cores). The sampler
is seeded, and a study's first 10 trials are random draws for both sweepers: they run trials of the same
lengths.

Each sweep is timed end to end; the submitit logs of its jobs give each job's span, from its Python's
start to its exit, during which it keeps its slot busy. Between the first job's start and the last job's
end, the slots' time is slots x that span; the idle share is the part of it in which a slot had no job.
The wall time also depends on how busy the machine is with other work, which the jobs' time, added up,
shows. Medians over studies run alternately with each sweeper; the ratio of the wall times is the median
of the ratios of studies run side by side. Targets: an idle share under 10% for ours, and a wall time at
most the plugin's (ratio <= 1). Exits with 1 if either is missed.

    .venv/bin/python benchmarks/optuna_slots.py [--trials 10] [--repeats 2] [--data DIR]
"""

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import torch

from common import REPO, interleaved, machine, median_ratio, print_table, verdict

sys.path.insert(0, str(REPO))  # the project's `src` package, when run as `python benchmarks/optuna_slots.py`

from src.datasets.cmnist import CMNISTDataModule, DigitSource

TARGET = 0.10  # the idle share of ours
WALL_TARGET = 1.0  # our wall time against the plugin's
SLOTS = 2
SEED = 42  # the runs' default seed: the data cache is built for it
STUDY = [
    "hydra/launcher=submitit_local",
    f"hydra.sweeper.n_jobs={SLOTS}",
    "hydra.sweeper.direction=maximize",
    "hydra.sweeper.sampler.seed=5",  # its 10 random draws: epochs 1 4 1 4 2 3 4 3 2 1
    "opt.epochs=range(1,5)",
    "model.hidden_dim=256",
]
PLUGIN, OURS = "plugin's (batches)", "ours (slots)"
SWEEPERS = {
    PLUGIN: ["hydra/sweeper=optuna"],
    OURS: ["hydra/sweeper=resumable_optuna", "hydra.sweeper.storage=study.journal", "hydra.sweeper.study_name=slots"],
}
# A submitit log line: `submitit INFO (2024-05-16 18:40:47,580) - Starting with JobEnvironment(...)`.
SUBMITIT_LOG_TIME = re.compile(r"^submitit \w+ \((?P<time>[^)]+)\) - ", re.MULTILINE)


@dataclass(frozen=True)
class Sweep:
    wall: float  # seconds, the command end to end
    span: float  # from the first job's start to the last job's end
    busy: float  # the jobs' spans, added up
    epochs: list[int]  # of each trial

    @property
    def idle(self) -> float:
        """The share of the slots' time, over the span, in which a slot had no job."""
        return 1 - self.busy / (SLOTS * self.span)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=10, help="trials per study (default: 10, at most 10)")
    parser.add_argument("--repeats", type=int, default=2, help="studies per sweeper (default: 2)")
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("HYDRA_EXAMPLE_DATA", REPO / "data")))
    args = parser.parse_args()
    root = args.data.resolve()
    CMNISTDataModule(root=root, digits=DigitSource.MNIST).build(seed=SEED)  # the cache, for the jobs
    env = os.environ | {"HYDRA_EXAMPLE_DATA": str(root), "PYTHONPATH": str(REPO)}
    env.pop("OMP_NUM_THREADS", None)  # each job takes its share of the cores (`ThreadBudget`)
    print(f"Machine: {machine()}; PyTorch {torch.__version__}")
    print(f"Study: main.py --multirun SWEEPER hydra.sweeper.n_trials={args.trials} {' '.join(STUDY)}")
    print(f"Median of {args.repeats} studies per sweeper, the order alternating.\n")

    pairs = interleaved(
        lambda: _sweep(SWEEPERS[OURS], args.trials, env),
        lambda: _sweep(SWEEPERS[PLUGIN], args.trials, env),
        args.repeats,
    )
    rows: list[list[str]] = []
    for name, sweeps in ((PLUGIN, [plugin for _, plugin in pairs]), (OURS, [ours for ours, _ in pairs])):
        rows.append(
            [
                name,
                f"{statistics.median(sweep.wall for sweep in sweeps):.0f} s",
                f"{statistics.median(sweep.busy for sweep in sweeps):.0f} s",
                f"{statistics.median(sweep.idle for sweep in sweeps):.1%}",
                " ".join(map(str, sweeps[0].epochs)),
            ]
        )
    idle = statistics.median(ours.idle for ours, _ in pairs)
    wall = median_ratio([(ours.wall, plugin.wall) for ours, plugin in pairs])
    print_table(["sweeper", "wall time", "jobs' time (sum)", "idle share of the slots", "epochs of the trials"], rows)
    print(f"\nTarget: idle share of ours < {TARGET:.0%}: {idle:.1%}, {verdict(idle < TARGET)}")
    print(f"Target: wall time of ours / the plugin's <= {WALL_TARGET:.2f}: {wall:.2f}, {verdict(wall <= WALL_TARGET)}")
    sys.exit(0 if idle < TARGET and wall <= WALL_TARGET else 1)


def _sweep(sweeper: list[str], trials: int, env: dict[str, str]) -> Sweep:
    """Run the study with `sweeper` in a new directory, and measure it."""
    with tempfile.TemporaryDirectory(prefix="hydra-example-slots-") as tmp:
        command = [
            sys.executable,
            str(REPO / "main.py"),
            "--multirun",
            *sweeper,
            f"hydra.sweeper.n_trials={trials}",
            *STUDY,
            "hydra.sweep.dir=sweep",
        ]
        start = time.perf_counter()
        result = subprocess.run(command, cwd=tmp, env=env, capture_output=True, text=True, check=False)
        wall = time.perf_counter() - start
        if result.returncode != 0:
            sys.exit(f"{' '.join(command)} exited with {result.returncode}:\n{result.stderr}")
        spans = _job_spans(Path(tmp) / "sweep")
        epochs = sorted(_epochs(Path(tmp) / "sweep"))
    first, last = min(start for start, _ in spans), max(end for _, end in spans)
    return Sweep(wall, last - first, sum(end - start for start, end in spans), epochs)


def _job_spans(sweep_dir: Path) -> list[tuple[float, float]]:
    """Each job's first and last submitit log line, in seconds since the epoch."""
    spans: list[tuple[float, float]] = []
    for folder in (sweep_dir / ".submitit").iterdir():
        text = "".join(path.read_text() for path in folder.glob("*_log.*"))
        times = [
            datetime.strptime(match["time"], "%Y-%m-%d %H:%M:%S,%f").timestamp()
            for match in SUBMITIT_LOG_TIME.finditer(text)
        ]
        if times:
            spans.append((min(times), max(times)))
    return spans


def _epochs(sweep_dir: Path) -> list[int]:
    """The `opt.epochs` of each job, from the overrides Hydra saved in its directory."""
    return [
        int(line.split("=")[1])
        for overrides in sweep_dir.glob("*/.hydra/overrides.yaml")
        for line in overrides.read_text().splitlines()
        if "opt.epochs=" in line
    ]


if __name__ == "__main__":
    main()
