"""What a result belongs to: the settings it was computed with (which a checkpoint and a stored Optuna study
are bound to), and the code that computed it (which every result records)."""

from __future__ import annotations

import hashlib
import json
import platform
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from src.common.files import write_atomically

__all__ = [
    "MAY_CHANGE_ON_RESUME",
    "bind_data",
    "changed_settings",
    "code_identity",
    "code_label",
    "data_label",
    "data_settings",
    "plain_config",
]

# Settings that may differ when a run continues: where it runs and logs, not what it computes (another GPU or
# number of threads changes only the last bits). (Where the data comes from may change, but not the data: a
# checkpoint is bound to the data's fingerprint.)
MAY_CHANGE_ON_RESUME = ("gpu", "threads", "wandb.", "dm.root", "dm.download")
PROJECT = Path(__file__).resolve().parents[2]  # the checkout whose main.py and src/ run
DEPENDENCIES = "requirements.lock"  # the pinned versions of everything installed
# The libraries whose versions can change a result (with Python's): what computes, what composes the config.
LIBRARIES = ("torch", "torchvision", "hydra-core", "omegaconf", "optuna")


def plain_config(config: dict[str, Any]) -> dict[str, Any]:
    """The config as plain values (paths and enums as strings), as a checkpoint or a study stores it."""
    return json.loads(json.dumps(config, default=str))


def changed_settings(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """The settings that differ between two plain configs, as `key: old -> new`, but for MAY_CHANGE_ON_RESUME."""
    old, new = _flatten(old), _flatten(new)
    return [
        f"{key}: {old.get(key)} -> {new.get(key)}"
        for key in sorted(old.keys() | new.keys())
        if old.get(key) != new.get(key) and not key.startswith(MAY_CHANGE_ON_RESUME)
    ]


def data_settings(overrides: list[str]) -> str:
    """The overrides of a job that choose its data (`dm` and its settings, an experiment), as one key: jobs of
    a sweep with the same key must run on the same data, whatever their other settings and seeds."""
    chosen = [override for override in overrides if override.lstrip("+~").startswith(("dm", "experiment"))]
    return " ".join(sorted(chosen)) or "the defaults"


def bind_data(
    bound: dict[str, dict[str, str]], data: dict[str, str], overrides: list[str], *, run: str, whole: str
) -> str | None:
    """Bind a job's `data` (its identity, as a result records it; `overrides`: the job's) in `bound`, the data
    that a sweep or study (`whole`) ran its jobs or trials (`run`) on, by their data settings: jobs of the same
    data settings must run on the same data. None where it does; else what differs and what to do, for a
    message that begins with the sweep or study."""
    key = data_settings(overrides)
    dataset = {"source": data["source"], "origin": data["origin"]}
    earlier = bound.setdefault(key, dataset)
    if earlier == dataset:
        return None
    return (
        f"ran its {run}s of these data settings ({key}) on {data_label(earlier)} data, and this {run}'s data is "
        f"{data_label(data)}: continue the {whole} on the data it started with (check dm.root, and "
        "HYDRA_EXAMPLE_DATA, which it defaults to)"
    )


def data_label(data: dict[str, str]) -> str:
    """A data identity in a few words, for tables and messages: where the data came from, and its origin."""
    return data["source"] if data["origin"] == data["source"] else f"{data['source']} {data['origin'][:8]}"


def code_identity(device: str, output_dir: Path) -> dict[str, Any]:
    """The code that computes a run: the git commit of this checkout, whether the checkout differs from it
    (the difference, untracked files included, is then saved in `output_dir` as `diff-HASH.patch`, named by
    its hash so that a run continued with other changes keeps both), a hash of the lock file, the versions of
    Python and of LIBRARIES, and the device. Outside a git checkout, says so."""
    identity: dict[str, Any] = {"commit": None, "dirty": None, "diff": None}
    commit = _git("rev-parse", "HEAD")
    if commit is None:
        identity["git"] = f"{PROJECT} is not a git checkout: the code is known by its versions alone"
    else:
        identity["commit"] = commit.decode().strip()
        difference = _difference()
        identity["dirty"] = bool(difference)
        if difference:
            name = f"diff-{hashlib.sha256(difference).hexdigest()[:16]}.patch"
            write_atomically(output_dir / name, lambda file: file.write(difference))
            identity["diff"] = name
    lock = PROJECT / DEPENDENCIES
    identity["lock"] = hashlib.sha256(lock.read_bytes()).hexdigest()[:16] if lock.is_file() else None
    identity["versions"] = {"python": platform.python_version()} | {name: _version(name) for name in LIBRARIES}
    identity["device"] = device
    return identity


def code_label(identity: dict[str, Any]) -> str:
    """A code identity in a few words, for tables and messages: its commit, and its difference, if any."""
    if identity.get("commit") is None:
        return "not in git"
    # The changes by the hash that names their file (`diff-HASH.patch`).
    changes = f" + changes {identity['diff'][5:13]}" if identity.get("diff") else ""
    return f"commit {identity['commit'][:8]}{changes}"


def _difference() -> bytes:
    """How the checkout differs from its commit: `git diff` of the tracked files, then each untracked file
    (those that .gitignore does not exclude) as a new file."""
    tracked = _git("diff", "HEAD", "--binary") or b""
    untracked = (_git("ls-files", "--others", "--exclude-standard", "-z") or b"").split(b"\0")
    new_files = [_git("diff", "--binary", "--no-index", "/dev/null", name.decode()) for name in untracked if name]
    return tracked + b"".join(patch or b"" for patch in new_files)


def _git(*arguments: str) -> bytes | None:
    """The output of `git ARGUMENTS` in the project's checkout; None where git cannot answer (no checkout)."""
    try:
        result = subprocess.run(["git", "-C", str(PROJECT), *arguments], capture_output=True, check=False, timeout=60)
    except (OSError, subprocess.TimeoutExpired):  # no git, or a checkout on a file system that hangs
        return None
    # `git diff --no-index` exits with 1 where the files differ, as a new file always does.
    return result.stdout if result.returncode in (0, 1) else None


def _version(distribution: str) -> str | None:
    try:
        return version(distribution)
    except PackageNotFoundError:
        return None


def _flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested config as dotted keys: {"opt": {"lr": 1}} -> {"opt.lr": 1}."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat |= _flatten(value, f"{prefix}{key}.")  # pyright: ignore[reportUnknownArgumentType]
        else:
            flat[f"{prefix}{key}"] = value
    return flat
