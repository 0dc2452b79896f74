"""CLI latency: `main.py --help` and a rejected override, against a bare Hydra app doing the same.

The bare app is written into a temporary folder: a `@hydra.main` function and a tiny config with a
`model` group of two options, `fcn` (with `hidden_dim`) and `cnn` (without), so that the same
override, `model=cnn model.hidden_dim=10`, is rejected the same way. It runs with the same Python and
so the same installed Hydra plugins, which Hydra discovers at every start. Each figure is the wall time
of a whole process, from start to exit, as a user waits for it; both run from the same empty folder.

Pairs are timed side by side in alternating order (ours, bare; bare, ours; ...) after one untimed
pair; the figure is the median of the per-pair ratios. Target: at most 1.5. Exits with 1 if missed.

    .venv/bin/python benchmarks/cli.py [--repeats 10]
"""

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from common import REPO, interleaved, machine, median_ratio, print_table, timed, verdict

TARGET = 1.5
BARE_APP = {
    "app.py": """\
import hydra
from omegaconf import DictConfig


@hydra.main(config_path="conf", config_name="config")
def main(cfg: DictConfig) -> None:
    print(cfg)


if __name__ == "__main__":
    main()
""",
    "conf/config.yaml": "defaults:\n  - model: fcn\n  - _self_\n\nseed: 42\n",
    "conf/model/fcn.yaml": "hidden_dim: null\n",
    "conf/model/cnn.yaml": "kernel_size: 5\n",
}
COMMANDS = {"--help": ["--help"], "rejected override": ["model=cnn", "model.hidden_dim=10"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=10, help="timed pairs per command (default: 10)")
    args = parser.parse_args()
    print(f"Machine: {machine()}")
    print(f"Median of {args.repeats} interleaved pairs; wall time of the whole process.\n")

    rows: list[list[str]] = []
    with tempfile.TemporaryDirectory(prefix="hydra-example-cli-") as tmp:
        bare, cwd = Path(tmp) / "bare", Path(tmp) / "cwd"
        for name, text in BARE_APP.items():
            (bare / name).parent.mkdir(parents=True, exist_ok=True)
            (bare / name).write_text(text)
        cwd.mkdir()
        for label, arguments in COMMANDS.items():
            ours = [sys.executable, str(REPO / "main.py"), *arguments]
            baseline = [sys.executable, str(bare / "app.py"), *arguments]
            expect_success = label == "--help"
            for command in (ours, baseline):  # untimed: also checks that each does what it should
                _check(command, cwd, expect_success=expect_success)
            pairs = interleaved(
                lambda ours=ours: _wall(ours, cwd), lambda baseline=baseline: _wall(baseline, cwd), args.repeats
            )
            ratio = median_ratio(pairs)
            rows.append(
                [
                    f"`{label}`",
                    f"{statistics.median(a for a, _ in pairs):.2f} s",
                    f"{statistics.median(b for _, b in pairs):.2f} s",
                    f"{ratio:.2f}",
                    f"<= {TARGET}",
                    verdict(ratio <= TARGET),
                ]
            )
    print_table(["command", "main.py", "bare Hydra app", "ratio", "target", "result"], rows)
    sys.exit(0 if all(row[-1] == "PASS" for row in rows) else 1)


def _check(command: list[str], cwd: Path, *, expect_success: bool) -> None:
    """Fail loudly if `--help` fails or the override is accepted: then the timings would mean nothing."""
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=False)
    if (result.returncode == 0) != expect_success or (not expect_success and "hidden_dim" not in result.stderr):
        sys.exit(f"{' '.join(command)} exited with {result.returncode}:\n{result.stdout}{result.stderr}")


def _wall(command: list[str], cwd: Path) -> float:
    return timed(lambda: subprocess.run(command, cwd=cwd, capture_output=True, check=False))


if __name__ == "__main__":
    main()
