"""metrics.json: the result that a run leaves in its output directory, and the one place that knows its
format and the name of the metric that a run returns and sweepers optimise."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import cast

from src.common.files import write_atomically

__all__ = ["FINISHED", "INTERRUPTED", "METRIC", "METRICS_FILE", "PRUNED", "RunResult", "read_result", "write_result"]

METRIC = "val/acc"  # what a run returns, so what the sweepers optimise; higher is better
METRICS_FILE = "metrics.json"
# A run's status: it trained all its epochs and was tested; an Optuna study's pruner stopped it (its metrics
# are those of its last epoch); a signal stopped it (no metrics). A job without the file failed.
FINISHED, PRUNED, INTERRUPTED = "finished", "pruned", "interrupted"


@dataclass(frozen=True)
class RunResult:
    """What metrics.json holds."""

    status: str  # FINISHED, PRUNED or INTERRUPTED
    epoch: int  # epochs completed
    data_source: str  # where the images came from: mnist, synthetic, celeba
    metrics: dict[str, float] = field(default_factory=dict[str, float])  # empty for an interrupted run

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
    if not isinstance(record, dict):
        return None
    fields = cast(dict[str, object], record)
    status, epoch, source, metrics = (fields.get(name) for name in ("status", "epoch", "data_source", "metrics"))
    if not (
        isinstance(epoch, int)
        and _is_number(epoch)
        and isinstance(status, str)
        and isinstance(source, str)
        and isinstance(metrics, dict)
    ):
        return None
    values = cast(dict[object, object], metrics)
    if not all(isinstance(name, str) and _is_number(value) for name, value in values.items()):
        return None
    result = RunResult(status, epoch, source, cast(dict[str, float], values))
    return None if status in (FINISHED, PRUNED) and METRIC not in result.metrics else result


def _is_number(value: object) -> bool:
    """A number as `write_result()` writes one: finite (strict JSON), and no `true` or `false`."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
