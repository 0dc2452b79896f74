"""Hydra's record of a run, in its output directory's .hydra/: the config, Hydra's config and the overrides,
which `--experimental-rerun` and the sweep summary read.

Hydra saves it before the run starts, over the record of the run that a refused one finds there (after
which that run could not be rerun either). conf/config.yaml turns that off (`hydra.output_subdir: null`),
and the run's `RunDirectory` saves it instead: in a new output directory as soon as the config is checked
(a job that then dies before it trains, killed or out of memory, is still in its sweep's summary), taken
back if the run is refused; over the record of an earlier run only once the run is accepted.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import cast

import yaml
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from src.common.errors import UserError
from src.common.exits import exit_on_user_error
from src.common.files import write_atomically, written_together

__all__ = ["RECORD", "HydraRecord", "check_rerun_argument", "saved_overrides"]

RECORD = ".hydra"  # where Hydra keeps it, and where `--experimental-rerun` looks


class HydraRecord:
    """Hydra's record of the job that runs in `output_dir`: the task's config, Hydra's config and the overrides."""

    def __init__(self, cfg: DictConfig, output_dir: Path) -> None:
        self.cfg, self.record = cfg, output_dir / RECORD
        self._provisional = False  # saved in a new directory before the run was accepted

    @classmethod
    def of_this_job(cls, cfg: DictConfig, output_dir: Path) -> HydraRecord | None:
        """The record of the Hydra job whose output directory is `output_dir`; None where `run()` is called as
        a library, outside a Hydra job or in another directory."""
        if not HydraConfig.initialized() or Path(HydraConfig.get().runtime.output_dir) != output_dir.absolute():
            return None
        return cls(cfg, output_dir)

    def save_if_new(self) -> None:
        """Save the record where there is none yet (the run's config is checked, and the directory is its own)."""
        if not self.record.exists():
            self._save()
            self._provisional = True

    def accept(self) -> None:
        """Keep the record of the run, which is accepted, saving it over an earlier run's."""
        if not self._provisional:
            self._save()
        self._provisional = False

    def take_back(self) -> None:
        """Remove the record saved by `save_if_new()` of a run that was then refused."""
        if self._provisional:
            shutil.rmtree(self.record, ignore_errors=True)

    def _save(self) -> None:
        """Save the three files, all new or (stopped meanwhile) all as they were."""
        self.record.mkdir(exist_ok=True)
        hydra_config = HydraConfig.get()
        saved = {
            "config.yaml": self.cfg,
            "hydra.yaml": OmegaConf.create({"hydra": hydra_config}),
            "overrides.yaml": hydra_config.overrides.task,
        }
        with written_together():
            for name, config in saved.items():
                text = OmegaConf.to_yaml(config)
                write_atomically(self.record / name, lambda file, text=text: file.write(text.encode()))


def check_rerun_argument(arguments: list[str] | None = None) -> None:
    """Refuse, with one line, `--experimental-rerun DIR` among the command line's `arguments` where DIR holds
    no record of a run that Hydra can read (Hydra would end in a traceback)."""
    with exit_on_user_error():
        _check_rerun_argument(sys.argv[1:] if arguments is None else arguments)


def _check_rerun_argument(arguments: list[str]) -> None:
    for index, argument in enumerate(arguments):
        name, equals, value = argument.partition("=")
        if name == "--experimental-rerun" and {"--multirun", "-m"} & set(arguments):
            raise UserError("--experimental-rerun reruns one run: leave out --multirun.")
        if name == "--experimental-rerun":
            directory = Path(value if equals else next(iter(arguments[index + 1 :]), ""))
            problem = _record_problem(directory / RECORD)
            if problem is not None:
                raise UserError(
                    f"--experimental-rerun {directory}: that is not the output directory of a run ({problem}); "
                    "give one such as outputs/DATE/TIME, or multirun/DATE/TIME/0 for a job."
                )


def saved_overrides(record_file: Path, *keys: str) -> list[str] | None:
    """The overrides, as typed, that Hydra saved in the YAML file `record_file` (under `keys`: `hydra`,
    `overrides`, `task` in a sweep's multirun.yaml); None where it holds none: the file is missing, is no YAML,
    or has another shape (it is no record of this program)."""
    saved = _find(_read_yaml(record_file), keys)
    if not isinstance(saved, list) or not all(isinstance(item, str) for item in cast(list[object], saved)):
        return None
    return cast(list[str], saved)


def _read_yaml(path: Path) -> object:
    """What a YAML file holds; None where it cannot be read as YAML."""
    try:
        return yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None


def _find(saved: object, keys: tuple[str, ...]) -> object:
    """`saved[key1][key2]...`, or None where there is no such value."""
    for key in keys:
        saved = cast(dict[str, object], saved).get(key) if isinstance(saved, dict) else None
    return saved


def _record_problem(record: Path) -> str | None:
    """What keeps Hydra from reading the record of a run, if anything: the files it reads, in the shape it
    reads them (lists of overrides, the job's settings)."""
    for name in ("hydra.yaml", "overrides.yaml"):
        if not (record / name).is_file():
            return f"it has no {RECORD}/{name}"
    if saved_overrides(record / "overrides.yaml") is None:
        return f"its {RECORD}/overrides.yaml is no list of overrides, as this program saves them"
    hydra_file = record / "hydra.yaml"
    saved_job = _find(_read_yaml(hydra_file), ("hydra", "job"))
    if saved_overrides(hydra_file, "hydra", "overrides", "hydra") is None or not isinstance(saved_job, dict):
        return f"its {RECORD}/hydra.yaml is no record of Hydra's settings, as this program saves them"
    try:
        OmegaConf.load(hydra_file)  # as Hydra reads it
    except (OSError, OmegaConfBaseException, yaml.YAMLError) as error:
        return str(error).strip().splitlines()[0]
    return None
