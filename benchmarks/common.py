"""What the benchmarks share: the repository's path, the machine's name, interleaved timing, the table."""

import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")
REPO = Path(__file__).resolve().parents[1]


def machine() -> str:
    """The CPU's model name and the number of cores, as `lscpu` reports them."""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return f"{line.split(':', 1)[1].strip()}, {os.cpu_count()} cores"
    return f"unknown CPU, {os.cpu_count()} cores"


def timed(work: Callable[[], object]) -> float:
    """Seconds that `work()` takes, by the wall clock."""
    start = time.perf_counter()
    work()
    return time.perf_counter() - start


def interleaved(ours: Callable[[], T], baseline: Callable[[], T], repeats: int) -> list[tuple[T, T]]:
    """`repeats` pairs of measurements (ours, baseline), taken side by side, the order alternating
    (A B, B A, A B, ...) so that a machine slowing down or speeding up favours neither."""
    pairs: list[tuple[T, T]] = []
    for repeat in range(repeats):
        if repeat % 2 == 0:
            first = ours()
            pairs.append((first, baseline()))
        else:
            second = baseline()
            pairs.append((ours(), second))
    return pairs


def median_ratio(pairs: Sequence[tuple[float, float]]) -> float:
    """The median of ours / baseline over pairs taken side by side: robust to drift and to outliers."""
    return statistics.median(ours / baseline for ours, baseline in pairs)


def verdict(passed: bool) -> str:
    return "PASS" if passed else "FAIL"


def print_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """A Markdown table, so that the output can be pasted into docs/performance.md."""
    widths = [max(len(headers[i]), *(len(row[i]) for row in rows)) for i in range(len(headers))]
    print("| " + " | ".join(header.ljust(width) for header, width in zip(headers, widths, strict=True)) + " |")
    print("|" + "|".join("-" * (width + 2) for width in widths) + "|")
    for row in rows:
        print("| " + " | ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)) + " |")


def timed_multirun(overrides: Sequence[str], cwd: Path, env: dict[str, str]) -> float:
    """Wall time of `main.py --multirun OVERRIDES` run in `cwd`, in a new sweep directory there (a job that
    found an old checkpoint would continue it); exits with the command's error if it fails."""
    sweep_dir = tempfile.mkdtemp(dir=cwd)
    command = [sys.executable, str(REPO / "main.py"), "--multirun", *overrides, f"hydra.sweep.dir={sweep_dir}"]
    start = time.perf_counter()
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"{' '.join(command)} exited with {result.returncode}:\n{result.stderr}")
    return seconds
