"""metrics.json: the result that a run leaves in its output directory, and the one place that knows its
format and the name of the metric that a run returns and sweepers optimise."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

from src.common.files import write_atomically

__all__ = ["FINISHED", "INTERRUPTED", "METRIC", "METRICS_FILE", "PRUNED", "RunResult", "read_result", "write_result"]

METRIC = "val/acc"  # what a run returns, so what the sweepers optimise; higher is better
METRICS_FILE = "metrics.json"
# A run's status: it trained all its epochs and was tested; an Optuna study's pruner stopped it (its metrics
# are those of its last epoch); a signal stopped it (no metrics). A job without the file failed.
FINISHED, PRUNED, INTERRUPTED = "finished", "pruned", "interrupted"
# metrics.json's fields, and the type of each (`RunResult`).
SHAPE = {"status": str, "epoch": int, "metrics": dict, "data": dict, "code": dict, "code_before": list}


@dataclass(frozen=True)
class RunResult:
    """What metrics.json holds: the result, and what it belongs to."""

    status: str  # FINISHED, PRUNED or INTERRUPTED
    epoch: int  # epochs completed
    metrics: dict[str, float]  # the final metrics (a pruned run's: its last epoch's); empty for an interrupted run
    # The data it trained on: `source` and `origin` (`Data`), and `fingerprint`, a hash of every tensor.
    data: dict[str, str]
    # The code that computed it (`code_identity()`), and the code of the run's earlier parts, if it was
    # stopped and continued with other code: oldest first, empty where the code never changed.
    code: dict[str, Any]
    code_before: list[dict[str, Any]] = field(default_factory=list[dict[str, Any]])

    @property
    def value(self) -> float:
        """The metric that the run returns."""
        return self.metrics[METRIC]


def write_result(output_dir: Path, result: RunResult) -> None:
    """Write metrics.json whole or not at all (an OSError leaves the previous one, if any)."""
    # allow_nan=False: strict JSON, which training guarantees by stopping at a loss that is not finite.
    text = json.dumps(asdict(result), indent=2, allow_nan=False)
    write_atomically(output_dir / METRICS_FILE, lambda file: file.write(text.encode() + b"\n"))


def read_result(output_dir: Path) -> RunResult | None:
    """The result recorded in `output_dir`; None where there is none, or none that this program wrote."""
    try:
        record: object = json.loads((output_dir / METRICS_FILE).read_text())
    except (OSError, ValueError):  # no file, or not JSON
        return None
    if not isinstance(record, dict) or set(cast(dict[str, object], record)) != set(SHAPE):
        return None
    fields = cast(dict[str, object], record)
    if not all(isinstance(fields[name], kind) for name, kind in SHAPE.items()) or not _is_number(fields["epoch"]):
        return None
    metrics = cast(dict[object, object], fields["metrics"])
    if not all(isinstance(name, str) and _is_number(value) for name, value in metrics.items()):
        return None
    result = RunResult(**cast(dict[str, Any], fields))
    return None if result.status in (FINISHED, PRUNED) and METRIC not in result.metrics else result


def _is_number(value: object) -> bool:
    """A number as `write_result()` writes one: finite (strict JSON), and no `true` or `false`."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
