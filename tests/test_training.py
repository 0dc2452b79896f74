"""End-to-end runs of `main.py`: real training on small generated data."""

import json
from pathlib import Path

from tests.conftest import RunMain


def test_default_run_learns_the_digits(run_main: RunMain, tmp_path: Path) -> None:
    result = run_main("hydra.run.dir=out")
    assert result.returncode == 0, result.stderr
    assert "Starting a run with seed 42 and GPU 0." in result.stdout
    record = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert record["status"] == "finished"
    assert record["data_source"] == "mnist"
    assert record["metrics"]["val/acc"] > 0.5  # ten classes: chance is 0.1
    assert f"Final val/acc={record['metrics']['val/acc']:.4f}" in result.stdout
