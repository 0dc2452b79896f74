"""The checks a composed config passes before a run starts, each refusing with one line.

Hydra checks every override against the dataclasses, with one exception: `+key=value` adds a key
that the dataclass does not have (Hydra's own error for a typo suggests the `+`), and nothing would
read it. Interpolations are resolved here, so that one that cannot be is a line, not a traceback;
the dataclasses' `__post_init__` then checks what types cannot (ranges, combinations).
"""

from dataclasses import fields, is_dataclass
from typing import Any, cast

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

from src.checks.as_used import as_used
from src.checks.credentials import refuse_credentials
from src.common.errors import UserError

__all__ = ["check_hydra_part", "checked_config"]


def checked_config(raw_config: DictConfig) -> tuple[object, dict[str, Any]]:
    """The config as its dataclasses, and resolved as plain values (as it is logged and checkpointed)."""
    try:
        resolved = cast(dict[str, Any], OmegaConf.to_container(raw_config, resolve=True, throw_on_missing=True))
    except OmegaConfBaseException as error:
        raise UserError(_one_line(error)) from None
    refuse_credentials(raw_config)  # first: later messages may show values
    _refuse_keys_not_in_schema(raw_config)
    # `to_object` builds the dataclasses, whose `__post_init__` raises UserError for values that make no sense.
    return OmegaConf.to_object(raw_config), resolved


def check_hydra_part(config: DictConfig) -> None:
    """Refuse Hydra's part of the whole config (`hydra.run.dir`, `hydra.sweep.dir`, ...) where a value cannot be
    resolved as it will be used (`as_used()`): Hydra would fail with a traceback as it uses it."""
    refuse_credentials(config)  # first: the message may show values
    with as_used(config) as used:
        for key in used.hydra:
            if key == "overrides":  # as typed, which Hydra reads as such
                continue
            try:
                value = used.hydra[key]  # resolves a value, such as `hydra.mode`
                if isinstance(value, DictConfig | ListConfig):
                    OmegaConf.to_container(value, resolve=True)
            except OmegaConfBaseException as error:
                # `hydra.job.override_dirname` resolves the task's overrides, which each job checks itself.
                if str(getattr(error, "full_key", "")).startswith("hydra."):
                    raise UserError(_one_line(error)) from None


def _refuse_keys_not_in_schema(node: DictConfig, prefix: str = "") -> None:
    """Refuse keys that a dataclass node does not have (they come from `+key=value`), and keys of the dataclass
    that the node lacks (deleted by `~key`: the run would use their defaults, and record none), in it and its
    sub-nodes."""
    schema = OmegaConf.get_type(node)
    assert schema is not None and is_dataclass(schema)
    names = [field.name for field in fields(schema)]
    deleted = [name for name in names if name not in node]
    if deleted:
        raise UserError(
            f"the config has no {prefix}{deleted[0]} (deleted by ~{prefix}{deleted[0]}?), which every run needs: "
            "keep it, and change its settings instead."
        )
    for key, value in node.items_ex(resolve=False):
        if key not in names:
            raise UserError(
                f"Key '{key}' not in '{schema.__name__}': +{prefix}{key} would be ignored. "
                f"Its keys: {', '.join(names)}."
            )
        # Dictionaries such as `dm.label_map` take any key; only the dataclasses' keys are fixed.
        if isinstance(value, DictConfig) and is_dataclass(OmegaConf.get_type(value)):
            _refuse_keys_not_in_schema(value, f"{prefix}{key}.")


def _one_line(error: OmegaConfBaseException) -> str:
    """What OmegaConf says about a value that cannot be resolved, without its traceback and details."""
    key = getattr(error, "full_key", None) or "a value"
    if isinstance(error, MissingMandatoryValue):
        return f"{key} is ??? (a value to be given): set it, e.g. on the command line as {key}=VALUE."
    # "KeyError raised while resolving interpolation: "Environment variable 'X' not found"" -> the reason alone
    reason = str(error).strip().splitlines()[0].rpartition("raised while resolving interpolation: ")[2]
    if len(reason) > 1 and reason[0] == reason[-1] == '"':
        reason = reason[1:-1]
    return f"cannot resolve {key}: {reason.rstrip('.')}."
