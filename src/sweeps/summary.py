"""The summary of a multirun: one row per job, and mean ± std over seeds, from the job directories."""

from __future__ import annotations

import csv
import io
import logging
import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from src.common.files import write_atomically
from src.records.hydra_record import saved_overrides
from src.records.metrics import FINISHED, METRIC, PRUNED, read_result

__all__ = ["Job", "SeedGroup", "Summary", "summarise_sweep"]

log = logging.getLogger(__name__)
# The console tables show these; the CSV files have every metric of metrics.json.
HEADLINE_METRICS = (METRIC, "val/worst_group_acc", "test/acc", "test/worst_group_acc")
SEED = "seed"


@dataclass(frozen=True)
class Job:
    """What one job of the multirun left in its output directory."""

    name: str  # its output directory, relative to the sweep directory
    overrides: dict[str, str]  # its command-line overrides (given or chosen by the sweeper), key -> value
    status: str  # finished, pruned at epoch N (by an Optuna study's pruner), interrupted (Ctrl-C) or failed
    metrics: dict[str, float]  # the final metrics; a pruned job's are those of its last epoch; else empty

    @property
    def finished(self) -> bool:
        return self.status == FINISHED


@dataclass(frozen=True)
class SeedGroup:
    """The jobs that differ only in their seed."""

    overrides: dict[str, str]  # the overrides they share: all but the seed
    jobs: list[Job]

    @property
    def finished(self) -> int:
        return sum(job.finished for job in self.jobs)

    def values(self, metric: str) -> list[float]:
        """The metric of each finished job."""
        return [job.metrics[metric] for job in self.jobs if job.finished and metric in job.metrics]

    def mean_std(self, metric: str) -> tuple[float | None, float | None]:
        """The mean of the metric over the finished jobs, and its sample standard deviation; None where
        there are too few of them."""
        values = self.values(metric)
        mean = statistics.mean(values) if values else None
        return mean, statistics.stdev(values) if len(values) > 1 else None


@dataclass(frozen=True)
class Summary:
    """The jobs of a sweep, best first, and its configurations, best mean first."""

    jobs: list[Job]
    groups: list[SeedGroup]


def summarise_sweep(sweep_dir: Path) -> Summary:
    """Write summary.csv (and summary_by_config.csv, when a configuration ran with several seeds) into
    the sweep directory, from what its job directories hold, and print the headline metrics."""
    # Finished jobs first, then pruned ones, each best first; then those without metrics.
    jobs = sorted(_read_jobs(sweep_dir), key=lambda job: (not job.finished, -job.metrics.get(METRIC, float("-inf"))))
    if not jobs:
        log.info(f"No job directories in {sweep_dir}: nothing to summarise.")
        return Summary([], [])
    keys = _union(job.overrides for job in jobs)
    metrics = _union(job.metrics for job in jobs)
    path = sweep_dir / "summary.csv"
    _write_csv(
        path,
        ["job", "status", *keys, *metrics],
        [[job.name, job.status, *_cells(job.overrides, keys), *_cells(job.metrics, metrics)] for job in jobs],
    )
    table = _table(
        ["job", "status", *keys, *HEADLINE_METRICS],
        [
            [job.name, job.status, *_cells(job.overrides, keys)]
            + [f"{job.metrics[name]:.4f}" if name in job.metrics else "" for name in HEADLINE_METRICS]
            for job in jobs
        ],
    )
    log.info(f"Summary of {len(jobs)} jobs, best {METRIC} first (all metrics in {path}):\n{table}")

    groups: dict[tuple[tuple[str, str], ...], SeedGroup] = {}
    for job in jobs:
        shared = {key: value for key, value in job.overrides.items() if key.lstrip("+~") != SEED}
        groups.setdefault(tuple(shared.items()), SeedGroup(shared, [])).jobs.append(job)
    by_config = sorted(groups.values(), key=_best_mean_first)
    if any(len(group.jobs) > 1 for group in by_config):
        _summarise_seeds(sweep_dir, by_config, metrics)
    return Summary(jobs, by_config)


def _summarise_seeds(sweep_dir: Path, groups: list[SeedGroup], metrics: list[str]) -> None:
    """Mean and (sample) standard deviation over the finished jobs of each configuration."""
    keys = _union(group.overrides for group in groups)
    path = sweep_dir / "summary_by_config.csv"
    _write_csv(
        path,
        [*keys, "n", "failed", *(f"{name} {stat}" for name in metrics for stat in ("mean", "std"))],
        [
            [*_cells(group.overrides, keys), group.finished, len(group.jobs) - group.finished]
            + [stat for name in metrics for stat in group.mean_std(name)]
            for group in groups
        ],
    )
    table = _table(
        [*keys, "n", "failed", *HEADLINE_METRICS],
        [
            [*_cells(group.overrides, keys), str(group.finished), str(len(group.jobs) - group.finished)]
            + [_format_mean_std(*group.mean_std(name)) for name in HEADLINE_METRICS]
            for group in groups
        ],
    )
    log.info(f"Mean ± std over seeds, best mean {METRIC} first; n: finished runs (all metrics in {path}):\n{table}")


def _best_mean_first(group: SeedGroup) -> float:
    mean, _ = group.mean_std(METRIC)
    return float("inf") if mean is None else -mean


def _read_jobs(sweep_dir: Path) -> list[Job]:
    """Every job directory under the sweep directory: those where Hydra saved the job's overrides."""
    jobs: list[Job] = []
    # Sorted so that Hydra's numbered job directories come in order: 0, 1, ..., 9, 10.
    for overrides_file in sorted(sweep_dir.glob("**/.hydra/overrides.yaml"), key=lambda p: (len(str(p)), str(p))):
        job_dir = overrides_file.parent.parent
        # Unresolved: an override such as `dm.root=${oc.env:HOME}/data` is shown as typed.
        given = saved_overrides(overrides_file)
        if given is None:  # no record of this program's: not one of its jobs
            continue
        overrides = {key: value for key, _, value in (override.partition("=") for override in given)}
        # A job that raised, or was killed, wrote no metrics.json (`run()` writes it last).
        result = read_result(job_dir)
        status = "failed" if result is None else result.status
        metrics = result.metrics if result is not None and status in (FINISHED, PRUNED) else {}
        if result is not None and status == PRUNED:
            status = f"{PRUNED} at epoch {result.epoch}"
        jobs.append(Job(str(job_dir.relative_to(sweep_dir)), overrides, status, metrics))
    return jobs


def _union(dicts: Iterable[dict[str, Any]]) -> list[str]:
    """All keys of the dicts, in the order they first appear."""
    return list({key: None for mapping in dicts for key in mapping})


def _cells(mapping: dict[str, Any], keys: list[str]) -> list[Any]:
    return [mapping.get(key, "") for key in keys]


def _format_mean_std(mean: float | None, std: float | None) -> str:
    if mean is None:
        return ""
    return f"{mean:.4f}" if std is None else f"{mean:.4f} ± {std:.4f}"


def _write_csv(path: Path, header: list[str], rows: list[list[Any]]) -> None:
    """Write a CSV file, whole or not at all; None and missing values are empty cells."""
    text = io.StringIO(newline="")
    writer = csv.writer(text)
    writer.writerow(header)
    writer.writerows(rows)
    write_atomically(path, lambda file: file.write(text.getvalue().encode()))


def _table(header: list[str], rows: list[list[str]]) -> str:
    """Plain text columns, as wide as their widest cell, with a rule under the header."""
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows, strict=True)]
    lines = [header, ["-" * width for width in widths], *rows]
    return "\n".join("  ".join(map(str.ljust, line, widths)).rstrip() for line in lines)
