"""README.md is a tested document: every command in it runs, and prints what the README shows."""

import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import REPO

# Commands the test does not run, and why.
NOT_RUN = {
    "make test": "it is the command that runs this test",
    "pip install -r requirements.lock": "it installs into the active environment; `make test` installed the same pins",
    "python main.py wandb.mode=online": "it needs a W&B account and the network (tests/test_wandb.py tests its errors)",
    "python main.py --multirun seed=42,43 hydra/launcher=slurm/kyiv": "tests/test_slurm.py runs it on a SLURM cluster",
    "python main.py --experimental-rerun outputs/long_run": "it continues an earlier run (tests/test_checkpoint.py)",
    "python main.py --multirun seed=42,43 hydra.sweep.dir=multirun/2026-11-28/00-03-10": (
        "it continues a stopped sweep; tests/test_sweeps.py kills one and runs the command it printed"
    ),
    "scancel --signal=USR2 JOB_ID": "it needs a running SLURM job; tests/test_slurm.py sends it to one",
    "nohup python main.py --multirun seed=42,43 hydra/launcher=slurm/kyiv > sweep.log 2>&1 &": (
        "it outlives the test in the background; tests/test_slurm.py runs the same sweep"
    ),
}
# Commands that stop with an error, which the README shows.
FAILING = {
    "python main.py model=cnn model.hidden_dim=10",
    "python main.py dm.val_prop=1.5",
    "python main.py opt.optimizer_cls=os.system",
}
# Overrides added to a command to keep the test short.
SHORTER = {"python main.py --multirun hydra/sweeper=fcn_params": ["hydra.sweeper.n_trials=3"]}
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)


@dataclass(frozen=True)
class Example:
    command: str
    expected_output: tuple[str, ...]  # lines that the output contains, in this order


def readme_examples() -> list[Example]:
    """Each command of a `bash` block, with the `text` block right after it as its output."""
    blocks = FENCE.findall((REPO / "README.md").read_text())
    examples: list[Example] = []
    for (language, body), (next_language, next_body) in zip(blocks, [*blocks[1:], ("", "")], strict=True):
        if language == "bash":
            expected = tuple(next_body.splitlines()) if next_language == "text" else ()
            examples += [Example(line, expected) for line in body.splitlines() if line.strip()]
    return examples


def normalise(line: str) -> str:
    """Blur what changes from run to run: times, dates and measured numbers."""
    line = re.sub(r"\d{4}-\d{2}-\d{2}[ /]\d{2}[:-]\d{2}[:-]\d{2}(,\d{3})?", "<time>", line)
    line = re.sub(r"\d+\.\d+", "<number>", line)
    return " ".join(line.split())


def assert_contains_in_order(output: str, expected: tuple[str, ...]) -> None:
    remaining = iter(normalise(line) for line in output.splitlines())
    for line in expected:
        wanted = normalise(line)
        assert any(wanted == actual for actual in remaining), f"not printed (in this order): {line!r}\n{output}"


EXAMPLES = readme_examples()


def test_the_readme_has_commands_and_outputs() -> None:
    assert len(EXAMPLES) > 20
    assert sum(bool(example.expected_output) for example in EXAMPLES) > 5
    assert set(NOT_RUN) <= {example.command for example in EXAMPLES}, "NOT_RUN names a command the README lost"


@pytest.mark.parametrize("example", EXAMPLES, ids=[example.command for example in EXAMPLES])
def test_readme_command(example: Example, mnist_root: Path, tmp_path: Path) -> None:
    if example.command in NOT_RUN:
        pytest.skip(NOT_RUN[example.command])
    words = shlex.split(example.command)
    env = os.environ | {"HYDRA_EXAMPLE_DATA": str(mnist_root), "WANDB_SILENT": "true"}
    if words[:2] == ["python", "main.py"]:
        argv, cwd = [sys.executable, str(REPO / "main.py"), *words[2:], *SHORTER.get(example.command, [])], tmp_path
    elif words == ["make", "run"]:
        argv, cwd = [*words, f"ARGS=hydra.run.dir={tmp_path / 'out'}"], REPO
    else:
        raise AssertionError(f"no way to run {example.command!r}: add it to NOT_RUN with the reason")
    result = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=600, check=False)
    output = result.stdout + result.stderr
    if example.command in FAILING:
        assert result.returncode != 0, output
        assert "Traceback" not in output
    else:
        assert result.returncode == 0, output
        assert "Warning" not in output, output  # e.g. a deprecation warning from Hydra or torch
    assert_contains_in_order(output, example.expected_output)
