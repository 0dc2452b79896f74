"""What a result belongs to: the settings it was computed with, compared with those of a run or a study that
would continue it (a checkpoint and a stored Optuna study are bound to their settings)."""

from __future__ import annotations

import json
from typing import Any

__all__ = ["MAY_CHANGE_ON_RESUME", "changed_settings", "plain_config"]

# Settings that may differ when a run continues: where it runs and logs, not what it computes (another GPU or
# number of threads changes only the last bits). (Where the data comes from may change, but not the data: a
# checkpoint is bound to the data's fingerprint.)
MAY_CHANGE_ON_RESUME = ("gpu", "threads", "wandb.", "dm.root", "dm.download")


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


def _flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested config as dotted keys: {"opt": {"lr": 1}} -> {"opt.lr": 1}."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat |= _flatten(value, f"{prefix}{key}.")  # pyright: ignore[reportUnknownArgumentType]
        else:
            flat[f"{prefix}{key}"] = value
    return flat
