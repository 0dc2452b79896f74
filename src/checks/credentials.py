"""No secret in the config: the config is logged (W&B, the checkpoint, .hydra/, the sweep summary).

W&B reads its API key from WANDB_API_KEY or ~/.netrc, never from the config; yet `+wandb.API_KEY=...`
adds one, and `${oc.env:WANDB_API_KEY}` copies one, into it. A run whose config has a key that names a
credential, or a value holding the key that W&B would use, is refused before anything is written.
"""

import json
import netrc
import os
import re
from collections.abc import Iterable
from typing import Any, cast
from urllib.parse import urlparse

from src.common.errors import UserError

__all__ = ["refuse_credentials"]

# Names of settings that hold secrets, in any case: api_key, API_KEY, apiKey, hf_token, db_password, ...
CREDENTIAL_NAME = re.compile(r"key|token|secret|passw", re.IGNORECASE)
HOW_WANDB_GETS_ITS_KEY = (
    "W&B reads its key from the environment variable WANDB_API_KEY or from ~/.netrc (`wandb login`)."
)


def refuse_credentials(config: dict[str, Any], overrides: Iterable[str] = ()) -> None:
    """Stop if the resolved `config`, or a command-line override, holds a credential. The message
    names the setting, never the value."""
    # A swept setting (`+wandb.api_key=a,b`) is in the overrides only, not yet in the config.
    overridden = [override.partition("=")[0].lstrip("+~") for override in overrides]
    for name in [*_key_paths(config), *overridden]:
        if CREDENTIAL_NAME.search(name.rpartition(".")[2]):
            raise UserError(
                f"the config has a setting named like a credential, {name}, and the config is logged: remove "
                f"it, and keep secrets out of the config. {HOW_WANDB_GETS_ITS_KEY}"
            )
    secrets = [secret for secret in (os.environ.get("WANDB_API_KEY"), _netrc_password()) if secret]
    texts = [json.dumps(config, default=str), *overrides]
    if any(secret in text for secret in secrets for text in texts):
        raise UserError(
            f"the config holds the W&B API key, and the config is logged: remove it. {HOW_WANDB_GETS_ITS_KEY}"
        )


def _key_paths(config: object, prefix: str = "") -> list[str]:
    """Every key of a nested config, dotted: {"opt": {"lr": 1}} -> ["opt", "opt.lr"]; list items by index."""
    if isinstance(config, dict):
        items = [(str(key), value) for key, value in cast(dict[object, object], config).items()]
    elif isinstance(config, list):
        items = [(str(index), value) for index, value in enumerate(cast(list[object], config))]
    else:
        return []
    return [path for key, value in items for path in (f"{prefix}{key}", *_key_paths(value, f"{prefix}{key}."))]


def _netrc_password() -> str | None:
    """The password that ~/.netrc holds for W&B's server, where `wandb login` saves the API key."""
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname or ""
    try:
        authenticators = netrc.netrc().authenticators(host)
    except (OSError, netrc.NetrcParseError):
        return None
    return authenticators[2] if authenticators else None
