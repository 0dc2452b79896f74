"""Weights & Biases logging, configured by the `wandb` config node."""

from __future__ import annotations

import configparser
import os
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from src.checks.credentials import wandb_api_keys
from src.common.errors import UserError
from src.common.paths import user_path

if TYPE_CHECKING:
    from wandb.sdk.wandb_run import Run

__all__ = ["WandbCfg", "WandbMode"]


class WandbMode(Enum):
    """`disabled` logs nothing, `offline` writes to `dir` for a later `wandb sync`."""

    DISABLED = "disabled"
    OFFLINE = "offline"
    ONLINE = "online"


# The names of W&B's settings (which its refusals name) that are not the names of ours (`WandbCfg`).
W_AND_B_NAMES = {
    "run_name": "name",
    "root_dir": "dir",
    "run_id": "id",
    "run_group": "group",
    "run_tags": "tags",
    "run_job_type": "job_type",
}
# W&B's older names for two modes, which WANDB_MODE may still hold.
MODE_ALIASES = {"dryrun": "offline", "run": "online"}


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
    # null: as W&B's own settings say (the environment variable WANDB_MODE, else what `wandb offline` or
    # `wandb disabled` saved), else disabled. A mode given here, on the command line or in a config file, wins.
    mode: WandbMode | None = None
    resume: str | None = None

    def resolved_mode(self) -> WandbMode:
        """`mode`, or where it is null, the mode that W&B's settings ask for (see `mode`)."""
        if self.mode is not None:
            return self.mode
        name = os.environ.get("WANDB_MODE") or _saved_mode()
        if not name:
            return WandbMode.DISABLED
        try:
            return WandbMode(MODE_ALIASES.get(name, name))
        except ValueError:
            raise UserError(
                f"WANDB_MODE={name} is not a W&B mode: use online, offline or disabled, or set wandb.mode."
            ) from None

    def build(self, config: dict[str, Any], *, resume_id: str | None = None) -> Run | None:
        """Start a W&B run that records `config`, or continue the run `resume_id` (that of a checkpoint);
        None when logging is disabled."""
        mode = self.resolved_mode()
        if mode is WandbMode.DISABLED:
            return None  # skip importing wandb, which takes a second
        import wandb
        from pydantic import ValidationError
        from wandb.errors import CommError, UsageError

        directory = user_path(
            self.dir, "wandb.dir"
        )  # relative to where the program was started, even with hydra.job.chdir
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise UserError(
                f"cannot write W&B's files to wandb.dir={self.dir} ({error}); set it to a writable folder."
            ) from None
        # Without this, an unreachable server keeps `wandb.init()` waiting for 90 s.
        init_timeout = float(os.environ.get("WANDB_INIT_TIMEOUT", "30"))
        try:
            return wandb.init(
                name=self.name,
                dir=directory,
                id=resume_id or self.id,
                project=self.project,
                group=self.group,
                entity=self.entity,
                tags=self.tags,
                job_type=self.job_type,
                mode=mode.value,
                resume="allow" if resume_id else self.resume,  # pyright: ignore[reportArgumentType]
                config=config,
                # Each job of a multirun is its own W&B run.
                reinit="finish_previous",
                settings=wandb.Settings(init_timeout=init_timeout, silent=True),
            )
        except UsageError as error:
            raise UserError(f"W&B cannot start in {mode.value} mode: {error}{_advice(mode)}") from None
        except ValidationError as error:  # W&B checks its settings with pydantic
            problem = error.errors()[0]
            setting = str(problem["loc"][0]) if problem["loc"] else ""
            ours = f"wandb.{W_AND_B_NAMES.get(setting, setting)}"
            reason = str(problem["msg"]).removeprefix("Value error, ")
            raise UserError(f"W&B refuses {ours}: {reason}; change it.") from None
        except CommError as error:
            reason = str(error).splitlines()[0]
            raise UserError(
                f"W&B could not reach its server within {init_timeout:.0f} s ({reason}); "
                "check the network or WANDB_INIT_TIMEOUT, or use wandb.mode=offline."
            ) from None


def _advice(mode: WandbMode) -> str:
    """What to do where W&B cannot start: online without an API key, say so (W&B's own words are `wandb login`)."""
    if mode is not WandbMode.ONLINE or wandb_api_keys():
        return ""
    return " (Online, W&B needs your API key: set WANDB_API_KEY, or use wandb.mode=offline.)"


def _saved_mode() -> str | None:
    """The mode that `wandb offline` or `wandb disabled` saved: in the project's wandb/settings (where it
    was run), else in W&B's global settings; read as W&B reads them, without importing W&B (a second)."""
    config_dir = Path(os.environ.get("WANDB_CONFIG_DIR") or "~/.config/wandb").expanduser()
    for settings_file in (user_path("wandb") / "settings", config_dir / "settings"):
        settings = configparser.ConfigParser()
        try:
            settings.read(settings_file)
        except configparser.Error:
            continue  # W&B, too, ignores a settings file it cannot parse
        if mode := settings.get("default", "mode", fallback=None):
            return mode
    return None
