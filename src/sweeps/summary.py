"""The summary of a multirun: one row per job that the sweep launched, and mean ± std over seeds, from the
job directories. Results of different data are never pooled, and where jobs' data or code differ, a column
says so."""

from __future__ import annotations

import csv
import io
import logging
import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from src.common.files import write_atomically
from src.common.text import shorten
from src.records.hydra_record import saved_overrides
from src.records.identity import code_label, data_label
from src.records.metrics import FINISHED, METRIC, PRUNED, read_result

__all__ = ["Job", "SeedGroup", "Summary", "record_job", "summarise_sweep"]

log = logging.getLogger(__name__)
# The console tables show these; the CSV files have every metric of metrics.json.
HEADLINE_METRICS = (METRIC, "val/worst_group_acc", "test/acc", "test/worst_group_acc")
SEED = "seed"
LAUNCHED = ".jobs"  # in the sweep directory: the output directory of each job the sweep launched, a line each
CELL_WIDTH = 40  # the console's tables shorten longer values (the CSV files keep them whole)


@dataclass(frozen=True)
class Job:
    """What one job of the multirun left in its output directory."""

    name: str  # its output directory, relative to the sweep directory
    overrides: dict[str, str]  # its command-line overrides (given or chosen by the sweeper), key -> value
    status: str  # finished, pruned at epoch N (by an Optuna study's pruner), interrupted (Ctrl-C) or failed
    metrics: dict[str, float]  # the final metrics; a pruned job's are those of its last epoch; else empty
    data: str = ""  # the data it trained on (`data_label()`); "" where it recorded none
    code: str = ""  # the code that computed it (`code_label()`), with the code it was continued from
    identity: dict[str, Any] = field(default_factory=dict[str, Any])  # data and code in full, for the CSV

    @property
    def finished(self) -> bool:
        return self.status == FINISHED


@dataclass(frozen=True)
class SeedGroup:
    """The jobs that differ only in their seed: the same settings, on the same data."""

    overrides: dict[str, str]  # the overrides they share: all but the seed
    jobs: list[Job]
    data: str = ""  # the data they trained on (`data_label()`)

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


def record_job(sweep_dir: Path, job_dir: Path) -> None:
    """Note in the sweep directory that the sweep launched the job whose output directory is `job_dir`: the
    summary covers these jobs, and no other directory there (earlier single runs, another program's)."""
    sweep_dir.mkdir(parents=True, exist_ok=True)
    # One short line, appended: whole, even where jobs on several machines append at once.
    with (sweep_dir / LAUNCHED).open("a") as file:
        file.write(f"{job_dir.absolute().relative_to(sweep_dir.absolute())}\n")


def summarise_sweep(sweep_dir: Path, reruns: dict[str, str] | None = None) -> Summary:
    """Write summary.csv (and summary_by_config.csv, when a configuration ran with several seeds) into the
    sweep directory, from the directories of the jobs it launched, and print the headline metrics. `reruns`:
    jobs that the sweep ran again in another directory (an Optuna trial given up when its sweep stopped),
    by name, with the name of the job that ran it again: listed, but neither pooled nor counted as failed."""
    reruns = reruns or {}
    # Finished jobs first, then pruned ones, each best first; then those without metrics.
    jobs = sorted(
        _read_jobs(sweep_dir, reruns), key=lambda job: (not job.finished, -job.metrics.get(METRIC, float("-inf")))
    )
    if not jobs:
        log.info(f"No job of this sweep in {sweep_dir}: nothing to summarise.")
        return Summary([], [])
    keys = _union(job.overrides for job in jobs)
    identity = _union(job.identity for job in jobs)
    metrics = _union(job.metrics for job in jobs)
    # Where jobs differ in their data or their code, or a job continued with other code, a column says so.
    shown = [name for name in ("data", "code") if len({getattr(job, name) for job in jobs}) > 1]
    shown += ["code"] if "code" not in shown and any("after" in job.code for job in jobs) else []
    path = sweep_dir / "summary.csv"
    _write_csv(
        path,
        ["job", "status", *keys, *metrics, *identity],
        [
            [
                job.name,
                job.status,
                *_cells(job.overrides, keys),
                *_cells(job.metrics, metrics),
                *_cells(job.identity, identity),
            ]
            for job in jobs
        ],
    )
    table = _table(
        ["job", "status", *keys, *shown, *HEADLINE_METRICS],
        [
            [job.name, job.status, *_cells(job.overrides, keys), *(getattr(job, name) for name in shown)]
            + [f"{job.metrics[name]:.4f}" if name in job.metrics else "" for name in HEADLINE_METRICS]
            for job in jobs
        ],
    )
    log.info(f"Summary of {len(jobs)} jobs, best {METRIC} first (all metrics in {path}):\n{table}")

    by_config = sorted(_group(job for job in jobs if job.name not in reruns), key=_best_mean_first)
    if any(len({job.overrides.get(SEED) for job in group.jobs}) > 1 for group in by_config):
        _summarise_seeds(sweep_dir, by_config, metrics, show_data="data" in shown)
    return Summary(jobs, by_config)


def _summarise_seeds(sweep_dir: Path, groups: list[SeedGroup], metrics: list[str], *, show_data: bool) -> None:
    """Mean and (sample) standard deviation over the finished jobs of each configuration."""
    keys = _union(group.overrides for group in groups)
    data = ["data"] if show_data else []
    path = sweep_dir / "summary_by_config.csv"
    _write_csv(
        path,
        [*keys, "data", "n", "failed", *(f"{name} {stat}" for name in metrics for stat in ("mean", "std"))],
        [
            [*_cells(group.overrides, keys), group.data, group.finished, len(group.jobs) - group.finished]
            + [stat for name in metrics for stat in group.mean_std(name)]
            for group in groups
        ],
    )
    table = _table(
        [*keys, *data, "n", "failed", *HEADLINE_METRICS],
        [
            [*_cells(group.overrides, keys), *([group.data] if show_data else [])]
            + [str(group.finished), str(len(group.jobs) - group.finished)]
            + [_format_mean_std(*group.mean_std(name)) for name in HEADLINE_METRICS]
            for group in groups
        ],
    )
    log.info(f"Mean ± std over seeds, best mean {METRIC} first; n: finished runs (all metrics in {path}):\n{table}")


def _group(jobs: Iterable[Job]) -> list[SeedGroup]:
    """The jobs by configuration: the same overrides but for the seed, and the same data. A job that recorded
    no data (it failed) joins a configuration of its overrides, if there is one."""
    groups: dict[tuple[Any, ...], SeedGroup] = {}
    for job in sorted(jobs, key=lambda job: not job.data):
        shared = {key: value for key, value in job.overrides.items() if key.lstrip("+~") != SEED}
        same = [group for key, group in groups.items() if key[:-1] == tuple(shared.items())]
        data = job.data or (same[0].data if same else "")
        groups.setdefault((*shared.items(), data), SeedGroup(shared, [], data)).jobs.append(job)
    return list(groups.values())


def _best_mean_first(group: SeedGroup) -> float:
    mean, _ = group.mean_std(METRIC)
    return float("inf") if mean is None else -mean


def _read_jobs(sweep_dir: Path, reruns: dict[str, str]) -> list[Job]:
    """The jobs that the sweep launched (`record_job()`), in the order of their names: 0, 1, ..., 9, 10."""
    launched = (sweep_dir / LAUNCHED).read_text().split() if (sweep_dir / LAUNCHED).is_file() else []
    jobs: list[Job] = []
    for name in sorted(set(launched), key=lambda name: (len(name), name)):
        job_dir = sweep_dir / name
        overrides_file = job_dir / ".hydra" / "overrides.yaml"
        if not overrides_file.is_file():  # killed before it was accepted, or moved away since
            continue
        # Unresolved: an override such as `dm.root=${oc.env:HOME}/data` is shown as typed.
        given = saved_overrides(overrides_file)
        if given is None:  # no record of this program's: not one of its jobs
            continue
        overrides = {key: value for key, _, value in (override.partition("=") for override in given)}
        # A job that raised, or was killed, wrote no metrics.json (`run()` writes it last).
        result = read_result(job_dir)
        if result is None:
            jobs.append(Job(name, overrides, "failed" if name not in reruns else _ran_again(reruns[name]), {}))
            continue
        status = f"{PRUNED} at epoch {result.epoch}" if result.status == PRUNED else result.status
        if name in reruns:
            status = _ran_again(reruns[name])
        metrics = result.metrics if result.status in (FINISHED, PRUNED) else {}
        code = ", after ".join(code_label(code) for code in [result.code, *reversed(result.code_before)])
        identity = _flatten({"data": result.data, "code": result.code})
        jobs.append(Job(name, overrides, status, metrics, data_label(result.data), code, identity))
    return jobs


def _ran_again(job: str) -> str:
    return f"run again as job {job}"


def _flatten(mapping: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dictionaries as one, with dotted keys: {"code": {"commit": c}} -> {"code.commit": c}."""
    flat: dict[str, Any] = {}
    for key, value in mapping.items():
        if isinstance(value, dict):
            flat |= _flatten(cast(dict[str, Any], value), f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


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
    """Plain text columns, as wide as their widest cell (long ones shortened), with a rule under the header."""
    rows = [[shorten(str(cell), CELL_WIDTH) for cell in row] for row in rows]
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows, strict=True)]
    lines = [header, ["-" * width for width in widths], *rows]
    return "\n".join("  ".join(map(str.ljust, line, widths)).rstrip() for line in lines)
