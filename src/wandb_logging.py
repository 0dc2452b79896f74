"""Weights & Biases logging, configured by the `wandb` config node."""

from __future__ import annotations

import json
import netrc
import os
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from src.errors import UserError

if TYPE_CHECKING:
    from wandb.sdk.wandb_run import Run

__all__ = ["WandbCfg", "WandbMode", "refuse_api_key"]


class WandbMode(Enum):
    """`disabled` logs nothing, `offline` writes to `dir` for a later `wandb sync`."""

    DISABLED = "disabled"
    OFFLINE = "offline"
    ONLINE = "online"


@dataclass(eq=False, kw_only=True)
class WandbCfg:
    """Arguments of `wandb.init()`; see its documentation for what each one does."""

    name: str | None = None
    dir: str = "./local_logging"
    id: str | None = None
    project: str = "hydra-example"
    group: str | None = None
    entity: str | None = None  # None: your default entity
    tags: list[str] | None = None
    job_type: str | None = None
    mode: WandbMode = WandbMode.DISABLED
    resume: str | None = None

    def build(self, config: dict[str, Any], *, resume_id: str | None = None) -> Run | None:
        """Start a W&B run that records `config`, or continue the run `resume_id` (that of a checkpoint);
        None when logging is disabled."""
        if self.mode is WandbMode.DISABLED:
            return None  # skip importing wandb, which takes a second
        import wandb
        from wandb.errors import CommError, UsageError

        Path(self.dir).mkdir(parents=True, exist_ok=True)
        # Without this, an unreachable server keeps `wandb.init()` waiting for 90 s.
        init_timeout = float(os.environ.get("WANDB_INIT_TIMEOUT", "30"))
        try:
            return wandb.init(
                name=self.name,
                dir=self.dir,
                id=resume_id or self.id,
                project=self.project,
                group=self.group,
                entity=self.entity,
                tags=self.tags,
                job_type=self.job_type,
                mode=self.mode.value,
                resume="allow" if resume_id else self.resume,  # pyright: ignore[reportArgumentType]
                config=config,
                # Each job of a multirun is its own W&B run.
                reinit="finish_previous",
                settings=wandb.Settings(init_timeout=init_timeout, silent=True),
            )
        except UsageError as error:
            raise UserError(
                f"W&B cannot start in {self.mode.value} mode: {error} "
                "(Or set WANDB_API_KEY, or use wandb.mode=offline.)"
            ) from None
        except CommError as error:
            reason = str(error).splitlines()[0]
            raise UserError(
                f"W&B could not reach its server within {init_timeout:.0f} s ({reason}); "
                "check the network or WANDB_INIT_TIMEOUT, or use wandb.mode=offline."
            ) from None


def refuse_api_key(config: dict[str, Any]) -> None:
    """Stop if the resolved config holds a W&B API key: the config is logged, to W&B among others.

    W&B reads the key from WANDB_API_KEY or ~/.netrc, never from the config; yet `+wandb.api_key=...`
    adds a key, and `${oc.env:WANDB_API_KEY}` copies one, into the config.
    """
    text = json.dumps(config, default=str)
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname or ""
    keys = [os.environ.get("WANDB_API_KEY"), _netrc_password(host)]
    if '"api_key"' in text or any(key and key in text for key in keys):
        # The message names where the key comes from, never its value.
        raise UserError(
            "the config holds a W&B API key, which would be logged with it: remove it; W&B reads the key from "
            "the environment variable WANDB_API_KEY or from ~/.netrc (`wandb login`)."
        )


def _netrc_password(host: str) -> str | None:
    """The password that ~/.netrc holds for `host`, where `wandb login` saves the API key."""
    try:
        authenticators = netrc.netrc().authenticators(host)
    except (OSError, netrc.NetrcParseError):
        return None
    return authenticators[2] if authenticators else None
