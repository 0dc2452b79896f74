"""Memory: the peak resident set size (RSS) of a run of `main.py`, against processes that only load PyTorch.

The run is the default one, `python main.py` (the fcn model on CMNIST, two epochs), or the one that
the overrides given on the command line make (e.g. `opt.epochs=1`, which peaks as high); it reads its
data from the cache, as every run but the first does, and runs in a new output directory. The
baselines are the floors that no PyTorch project goes under: `import torch`, and `import torch` with
an AdamW optimiser made, since making any `torch.optim` optimiser imports `torch._dynamo` (and with it
sympy and, where installed, Triton). Each peak is the kernel's own record for that one process
(`ru_maxrss` from `os.wait4`): every page the process had in memory at its peak, memory-mapped files
(the data cache, PyTorch's libraries) included, up to its exit. Medians over the repetitions, taken
in alternating order, and their range. MB are 10^6 bytes. Target: the run under 1 GB (1000 MB).
Exits with 1 if missed.

    .venv/bin/python benchmarks/memory.py [--repeats 3] [OVERRIDE ...]
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile

from common import REPO, machine, print_table, verdict

TARGET_MB = 1000.0
BASELINES = {
    "import torch": "import torch",
    "import torch; AdamW(...)": "import torch; torch.optim.AdamW(torch.nn.Linear(1, 1).parameters())",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3, help="rounds of the three processes (default: 3)")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for main.py (default: none)")
    args = parser.parse_args()
    print(f"Machine: {machine()}")
    print(f"Median of {args.repeats} rounds.\n")

    run = " ".join(["main.py", *args.overrides])
    commands = {run: [sys.executable, str(REPO / "main.py"), *args.overrides]}
    commands |= {name: [sys.executable, "-c", code] for name, code in BASELINES.items()}
    peaks: dict[str, list[float]] = {name: [] for name in commands}
    for repeat in range(args.repeats):
        for name in commands if repeat % 2 == 0 else reversed(commands):
            peaks[name].append(_peak_rss_mb(commands[name]))
    ours = statistics.median(peaks[run])
    rows = [[f"`{run}`", f"{ours:.0f} MB", _spread(peaks[run]), "", f"< {TARGET_MB:.0f} MB", verdict(ours < TARGET_MB)]]
    for name in BASELINES:
        baseline = statistics.median(peaks[name])
        ratio = f"{ours / baseline:.2f} ({ours - baseline:+.0f} MB)"
        rows.append([f"`{name}`", f"{baseline:.0f} MB", _spread(peaks[name]), ratio, "", ""])
    print_table(["process", "peak RSS", "range", "run / this", "target", "result"], rows)
    sys.exit(0 if ours < TARGET_MB else 1)


def _spread(peaks: list[float]) -> str:
    return f"{min(peaks):.0f}-{max(peaks):.0f} MB"


def _peak_rss_mb(command: list[str]) -> float:
    """The peak RSS of `command`'s process, in MB, run in a new folder (so that `main.py` starts a new
    run there rather than continue an old one from its checkpoint); an error if it fails."""
    with tempfile.TemporaryDirectory(prefix="hydra-example-memory-") as cwd:
        process = subprocess.Popen(command, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        assert process.stderr is not None
        errors = process.stderr.read()  # read before waiting, so that a full pipe cannot block the process
        _, status, usage = os.wait4(process.pid, 0)  # the usage of this one process, unlike getrusage()
        process.returncode = os.waitstatus_to_exitcode(status)  # it is reaped: tell Popen
    if process.returncode != 0:
        sys.exit(f"{' '.join(command)} exited with {process.returncode}:\n{errors.decode()}")
    return usage.ru_maxrss * 1024 / 1e6  # ru_maxrss is in KiB on Linux


if __name__ == "__main__":
    main()
