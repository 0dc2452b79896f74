#!/usr/bin/env python3
"""Get a past result again from its record, and compare: `scripts/reproduce.py RUN_DIR [WORK_DIR]`.

RUN_DIR is a run's output directory (outputs/DATE/TIME, or a job's multirun/DATE/TIME/N). Its metrics.json
says which code computed the result (a git commit, and the changes saved beside it) and on which data. This
script checks that commit out of the git checkout it lives in, into WORK_DIR (a new temporary folder by
default), applies the saved changes, reruns the run's overrides (.hydra/overrides.yaml) there on the data
that HYDRA_EXAMPLE_DATA and the overrides name, and compares every metric and the data's identity with
the record. It uses the Python that runs it where the libraries' versions are the ones recorded, and says
which differ otherwise (install the recorded lock file, `pip install -r WORK_DIR/code/requirements.lock`,
in a new environment, and run this script with it). Exit status 0: the same result, bit for bit.
"""

import json
import subprocess
import sys
import tempfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import yaml

PROJECT = Path(__file__).resolve().parents[1]


def main(run_dir: Path, work_dir: Path) -> int:
    record = json.loads((run_dir / "metrics.json").read_text())
    code, overrides = record["code"], _overrides(run_dir)
    if code["commit"] is None:
        print(f"Cannot check the code out: {code['git']}.")
        return 1
    other_versions = [
        f"{name} {recorded} (here {_version(name)})"
        for name, recorded in code["versions"].items()
        if name != "python" and recorded != _version(name)
    ]
    if other_versions:
        print(f"Other versions here than the run's: {', '.join(other_versions)}; install the recorded lock file.")
        return 1
    checkout = work_dir / "code"
    checkout.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(PROJECT), "archive", code["commit"]], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(checkout)], input=archive.stdout, check=True)
    if code["diff"] is not None:
        subprocess.run(["git", "apply", "--binary", str((run_dir / code["diff"]).absolute())], cwd=checkout, check=True)
    print(f"Code: commit {code['commit'][:8]}{' with ' + code['diff'] if code['diff'] else ''}, in {checkout}.")
    print(f"Rerunning: python main.py {' '.join(overrides)}")
    again = work_dir / "run"
    subprocess.run([sys.executable, str(checkout / "main.py"), *overrides, f"hydra.run.dir={again}"], check=True)
    return _compare(record, json.loads((again / "metrics.json").read_text()))


def _overrides(run_dir: Path) -> list[str]:
    """The run's overrides, as Hydra saved them."""
    overrides: list[str] = yaml.safe_load((run_dir / ".hydra" / "overrides.yaml").read_text())
    return overrides


def _compare(recorded: dict[str, object], again: dict[str, object]) -> int:
    differences = [
        f"{name}: {recorded[name]} -> {again[name]}" for name in ("status", "metrics") if recorded[name] != again[name]
    ]
    data_recorded, data_again = recorded["data"], again["data"]
    if data_recorded != data_again:
        differences.append(f"data: {data_recorded} -> {data_again}")
    if differences:
        print("Not reproduced:\n" + "\n".join(differences))
        return 1
    print("Reproduced: the same metrics, bit for bit, on the same data.")
    return 0


def _version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__)
    sys.exit(main(Path(sys.argv[1]), Path(sys.argv[2]) if len(sys.argv) == 3 else Path(tempfile.mkdtemp())))
