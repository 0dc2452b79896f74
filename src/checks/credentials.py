"""No secret in the config: the config is logged (W&B, the checkpoint, .hydra/, the sweep summary, an Optuna
study), and Hydra's part of it names folders and files (`hydra.run.dir`, the log file after `hydra.job.name`).

W&B reads its API key from WANDB_API_KEY or ~/.netrc, never from the config; yet `+wandb.API_KEY=...` adds one,
and `${oc.env:WANDB_API_KEY}` copies one, into it. The config is checked as it will be used, not as it was
typed: every value resolved, Hydra's part and the sweeper's search space included, and the overrides of the
command line (a swept value is in no config before its job starts). A config with a setting named like a
credential, or a value holding the key that W&B would use, is refused before anything is printed or written.
"""

from __future__ import annotations

import netrc
import os
import re
from collections.abc import Iterator
from dataclasses import fields, is_dataclass
from typing import Any, cast
from urllib.parse import urlparse

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from src.checks.as_used import as_used, child, holds_settings, keys
from src.common.errors import UserError

__all__ = ["refuse_credentials", "wandb_api_keys"]

# Names of settings that hold secrets, in any case: api_key, API_KEY, apiKey, hf_token, db_password, ...
CREDENTIAL_NAME = re.compile(r"key|token|secret|passw", re.IGNORECASE)
HOW_WANDB_GETS_ITS_KEY = (
    "W&B reads its key from the environment variable WANDB_API_KEY or from ~/.netrc (`wandb login`)."
)
OVERRIDES = "hydra.overrides"  # the command line's overrides, as typed: `task` (the run's config) and `hydra`


def refuse_credentials(config: DictConfig) -> None:
    """Stop if the config, as it will be used, holds a credential. The message names the setting, never the
    value. `config`: a run's own config, or the whole config that Hydra composed (with `hydra`)."""
    secrets = wandb_api_keys()
    with as_used(config) as used:
        for name, texts in _settings(used):
            _refuse(name, texts, secrets, config)


def wandb_api_keys() -> list[str]:
    """The API keys that W&B would use: from WANDB_API_KEY, and from ~/.netrc, where `wandb login` saves it."""
    return [secret for secret in (os.environ.get("WANDB_API_KEY"), _netrc_password()) if secret]


def _refuse(name: str, texts: list[str], secrets: list[str], config: DictConfig) -> None:
    shown_name = name  # the key itself may be the secret (`+opt.optimizer_kwargs={<key>: 1}`): never shown
    for secret in secrets:
        shown_name = shown_name.replace(secret, "<the key>")
    if CREDENTIAL_NAME.search(name.rpartition(".")[2]) and not _in_a_schema(config, name):
        raise UserError(
            f"the config has a setting named like a credential, {shown_name}, and the config is logged: remove it, "
            f"and keep secrets out of the config. {HOW_WANDB_GETS_ITS_KEY}"
        )
    if any(secret in text for secret in secrets for text in [name, *texts]):
        raise UserError(
            f"the config holds the W&B API key, in {shown_name}, and the config is logged: remove it. "
            f"{HOW_WANDB_GETS_ITS_KEY}"
        )


def _settings(config: DictConfig) -> Iterator[tuple[str, list[str]]]:
    """Every setting of the config, by its dotted name, with its value as text: as typed and, where that is an
    interpolation, as it resolves; the command line's overrides by the name of the setting they set."""
    overrides = OmegaConf.select(config, OVERRIDES)
    for override_node in overrides.values() if isinstance(overrides, DictConfig) else ():
        for index in range(len(override_node)):
            typed, resolved = _texts(override_node, index)
            name, equals, _ = typed.partition("=")
            if equals and not name.startswith("~"):
                yield name.lstrip("+"), [typed, *resolved]
    yield from _values(config, "")


def _values(node: DictConfig | ListConfig, prefix: str) -> Iterator[tuple[str, list[str]]]:
    for key in keys(node):
        name = f"{prefix}{key}"
        if name == OVERRIDES:
            continue
        if holds_settings(node, key):
            yield name, []
            yield from _values(cast(DictConfig | ListConfig, child(node, key)), f"{name}.")
        else:
            typed, resolved = _texts(node, key)
            yield name, [typed, *resolved]


def _texts(node: DictConfig | ListConfig, key: Any) -> tuple[str, list[str]]:
    """A value as typed, and as it resolves (none where it cannot: that is refused where it is used)."""
    typed = str(child(node, key)._value())  # pyright: ignore[reportPrivateUsage]
    try:
        value = node[key]  # pyright: ignore[reportArgumentType] (str keys of a DictConfig, int ones of a ListConfig)
        resolved = OmegaConf.to_container(value, resolve=True) if isinstance(value, DictConfig | ListConfig) else value
    except OmegaConfBaseException:
        return typed, []
    return typed, [str(resolved)]


def _in_a_schema(config: DictConfig, name: str) -> bool:
    """Whether the setting `name` is a field of a dataclass (ours, or Hydra's such as
    `hydra.job.config.override_dirname.exclude_keys`): its name was chosen by its code, not by a config."""
    parent_name, _, key = name.rpartition(".")
    try:
        parent = OmegaConf.select(config, parent_name, throw_on_missing=False) if parent_name else config
    except OmegaConfBaseException:
        return False
    if not isinstance(parent, DictConfig):
        return False
    schema = OmegaConf.get_type(parent)
    return schema is not None and is_dataclass(schema) and key in {field.name for field in fields(schema)}


def _netrc_password() -> str | None:
    """The password that ~/.netrc holds for W&B's server, where `wandb login` saves the API key."""
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname or ""
    try:
        authenticators = netrc.netrc().authenticators(host)
    except (OSError, netrc.NetrcParseError):
        return None
    return authenticators[2] if authenticators else None
