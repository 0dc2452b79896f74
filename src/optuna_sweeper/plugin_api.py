"""The parts of Hydra's Optuna plugin that our sweeper reuses, in one place: they are private to the plugin.

The plugin's search space (`params`, and sweeps on the command line such as `opt.lr=interval(0.1, 1)`) is
turned into Optuna's distributions, and a trial into its job's overrides, by its private module `_impl`
and private methods of its `OptunaSweeperImpl`. Reusing them keeps our sweeper's search space exactly the
plugin's, but they may change in any release (`create_params_from_overrides` returned two values before
1.3, three since): tests/test_optuna_plugin_api.py pins what each of them does with the pinned versions,
and fails, naming it, where one changed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hydra_plugins.hydra_optuna_sweeper._impl import OptunaSweeperImpl, create_params_from_overrides

if TYPE_CHECKING:
    import optuna
    from optuna.distributions import BaseDistribution

__all__ = ["SearchSpace", "directions", "grid_choices", "search_space", "sweep_search_space", "trial_overrides"]


@dataclass(frozen=True)
class SearchSpace:
    """What the sweeper searches, and what it passes to every job as it is."""

    distributions: dict[str, BaseDistribution]  # the searched parameters
    fixed_params: dict[str, Any]  # parameters set to one value (on the command line, say)
    fixed_overrides: list[str]  # other overrides every job gets (deletions such as `~key`)

    @property
    def fixed(self) -> list[str]:
        """Every override that each job gets, but for the searched parameters."""
        return [*(f"{name}={value}" for name, value in self.fixed_params.items()), *self.fixed_overrides]


def search_space(overrides: list[str]) -> SearchSpace:
    """The search space of `overrides` such as `opt.lr=tag(log, interval(1e-5, 1e-3))`, as the plugin reads it;
    ValueError, AssertionError, NotImplementedError or TypeError where Optuna cannot sample one."""
    distributions, fixed_params, fixed_overrides = create_params_from_overrides(overrides)
    return SearchSpace(distributions, fixed_params, fixed_overrides)


def sweep_search_space(plugin: OptunaSweeperImpl, arguments: list[str]) -> SearchSpace:
    """The search space of a sweep: the sweeper's `params`, and the command line's `arguments`, which win
    (a parameter searched in `params` but fixed on the command line is fixed)."""
    plugin._process_searchspace_config()  # pyright: ignore[reportPrivateUsage]
    space = search_space([*plugin._parse_sweeper_params_config(), *arguments])  # pyright: ignore[reportPrivateUsage]
    for name in space.fixed_params:
        space.distributions.pop(name, None)
    return space


def directions(plugin: OptunaSweeperImpl) -> list[str]:
    """The study's directions, as Optuna names them (`maximize`, `minimize`)."""
    return plugin._get_directions()  # pyright: ignore[reportPrivateUsage]


def trial_overrides(plugin: OptunaSweeperImpl, trial: optuna.Trial, space: SearchSpace) -> Sequence[str]:
    """Draw the trial's parameters from the search space; the overrides of its job."""
    (overrides,) = plugin._configure_trials([trial], space.distributions, space.fixed_params, space.fixed_overrides)  # pyright: ignore[reportPrivateUsage]
    return overrides


def grid_choices(distribution: BaseDistribution) -> list[Any]:
    """The values that a GridSampler tries of a finite distribution; ValueError for a continuous one."""
    return list(OptunaSweeperImpl._to_grid_sampler_choices(distribution))  # pyright: ignore[reportPrivateUsage]
