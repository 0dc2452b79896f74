"""The Optuna sweeper's settings, checked before the sweep starts (by src.sweeps.callbacks.StartCheck).

The plugin's sweeper takes them as they come, and a wrong one ends the sweep in a traceback: from a
division by zero (`n_jobs=0`), from Optuna (`direction`, an empty search range) or from the file system
(`storage` in a folder that does not exist); or it ends with nothing (`n_trials=0`).
"""

from pathlib import Path
from typing import Any, cast

from omegaconf import DictConfig, OmegaConf

from src.common.errors import UserError
from src.common.targets import check_target, instantiates
from src.optuna_sweeper.storage import check_storage

__all__ = ["check_sweeper_settings"]

DIRECTIONS = ("maximize", "minimize")


def check_sweeper_settings(sweeper: DictConfig, overrides: list[str], cwd: Path) -> None:
    """Refuse settings of `hydra.sweeper` (an Optuna sweeper's) with which the sweep cannot run, and a
    search space, from its `params` and the command line's `overrides`, that Optuna cannot sample; `cwd`:
    where the sweep starts, from which the study's file is found."""
    for key in ("n_trials", "n_jobs"):
        if sweeper[key] < 1:
            raise UserError(f"hydra.sweeper.{key}={sweeper[key]} must be 1 or more.")
    if not 0 <= sweeper.max_failure_rate <= 1:
        raise UserError(f"hydra.sweeper.max_failure_rate={sweeper.max_failure_rate} must be between 0 and 1.")
    _check_direction(sweeper.direction)
    from optuna.pruners import BasePruner, NopPruner
    from optuna.samplers import BaseSampler, GridSampler

    check_target(sweeper.sampler, "hydra.sweeper.sampler", BaseSampler, "hydra/sweeper/sampler")
    if sweeper.storage is not None and sweeper.study_name is None:
        raise UserError(
            "hydra.sweeper.study_name=null: a stored study needs a name, by which the next sweep continues it and "
            "each job finds its trial; give it one."
        )
    pruner = sweeper.get("pruner")  # our sweeper's (`StudySweeperConf`); the plugin's has none
    if pruner is not None:
        check_target(pruner, "hydra.sweeper.pruner", BasePruner, "hydra/sweeper/pruner")
    if pruner is not None and not instantiates(pruner, NopPruner) and None in (sweeper.storage, sweeper.study_name):
        raise UserError(
            f"hydra.sweeper.pruner={pruner._target_} needs a stored study, where each job reports to its "
            "trial: set hydra.sweeper.storage and hydra.sweeper.study_name."
        )
    seed = sweeper.sampler.get("seed")
    if seed is not None and not 0 <= seed < 2**32:
        raise UserError(f"hydra.sweeper.sampler.seed={seed} must be from 0 to 2**32 - 1, as numpy's seeds are.")
    grid = instantiates(sweeper.sampler, GridSampler)
    params = {**cast(dict[str, str], OmegaConf.to_container(sweeper.params or {})), **_keyed(overrides)}
    _check_search_space(params, grid=grid)
    if sweeper.storage is not None:
        check_storage(str(sweeper.storage), cwd)


def _check_direction(direction: Any) -> None:
    directions = list(direction) if OmegaConf.is_list(direction) else [direction]
    names = [str(getattr(value, "name", value)).lower() for value in directions]
    if len(names) != 1 or names[0] not in DIRECTIONS:
        raise UserError(
            f"hydra.sweeper.direction={names if len(names) != 1 else names[0]}: main() returns one number, "
            "val/acc, so give one direction: maximize (or minimize)."
        )


def _check_search_space(params: dict[str, str], *, grid: bool) -> None:
    """Build each parameter's distribution as the plugin does: Optuna refuses an empty or reversed range;
    a grid takes a finite number of values."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    from src.optuna_sweeper.plugin_api import search_space

    for key, value in params.items():
        try:
            distributions = search_space([f"{key}={value}"]).distributions
        except (ValueError, AssertionError, NotImplementedError, TypeError) as error:
            reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise UserError(f"the search space {key}={value} is not one Optuna can sample: {reason}") from None
        for distribution in distributions.values():
            finite = isinstance(distribution, CategoricalDistribution | IntDistribution) or (
                isinstance(distribution, FloatDistribution) and distribution.step is not None
            )
            if grid and not finite:
                raise UserError(
                    f"the search space {key}={value} is continuous, and hydra/sweeper/sampler=grid needs a finite "
                    "set of values: give it choice(...) or range(...), or use another sampler."
                )


def _keyed(overrides: list[str]) -> dict[str, str]:
    """Command-line overrides as key -> value, without `+`, `~` and deletions."""
    keyed: dict[str, str] = {}
    for override in overrides:
        key, equals, value = override.partition("=")
        if equals and not key.startswith("~"):
            keyed[key.lstrip("+")] = value
    return keyed
