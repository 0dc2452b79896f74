"""A study's search space, checked before the sweep starts: a value with which no trial can run is refused then,
rather than found by trials that each fail.

A value can be refused only with certain values of the other parameters (`model.hidden_dim=16` with
`model.num_hidden=0`): such points are failed trials, and the study learns to avoid them. A value that is
refused with every value of the others (`model.num_hidden=choice(0)` with a fixed `model.hidden_dim=16`) could
only ever fail. Each categorical value and each end of each range is composed, with each combination of the
others' values, into the config of a job, and checked as a job checks it (`checked_config()`).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from src.common.errors import UserError

if TYPE_CHECKING:
    from optuna.distributions import BaseDistribution

    from src.optuna_sweeper.plugin_api import SearchSpace

__all__ = ["MAX_POINTS", "refuse_values_that_never_run"]

# The most combinations checked (at some 20 ms each); a larger search space is not checked before the sweep.
MAX_POINTS = 64
CHANGE = "Change the search space, or what it is combined with."


def refuse_values_that_never_run(space: SearchSpace, refusal: Callable[[list[str]], str | None]) -> None:
    """Refuse a value of the search space with which no trial can run; `refusal(overrides)`: why a job of these
    overrides would be refused, or None."""
    candidates = {name: _candidates(distribution) for name, distribution in space.distributions.items()}
    points = [dict(zip(candidates, values, strict=True)) for values in itertools.product(*candidates.values())]
    if not points or len(points) > MAX_POINTS:
        return
    refusals = [refusal([*(f"{name}={value}" for name, value in point.items()), *space.fixed]) for point in points]
    if all(refusals):
        raise UserError(f"no trial of the search space can run: {_reason(refusals[0])}. {CHANGE}")
    for name, values in candidates.items():
        for value in values:
            reasons = [reason for point, reason in zip(points, refusals, strict=True) if point[name] == value]
            if all(reasons):
                value_of_the_space = f"{name}={value}, a value of the search space"
                raise UserError(f"no trial can run with {value_of_the_space}: {_reason(reasons[0])}. {CHANGE}")


def _reason(refusal: str | None) -> str:
    return (refusal or "").rstrip(".")


def _candidates(distribution: BaseDistribution) -> list[Any]:
    """The values of a distribution that are checked: every categorical value, the ends of a range."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if isinstance(distribution, CategoricalDistribution):
        return list(distribution.choices)
    assert isinstance(distribution, IntDistribution | FloatDistribution)
    return list(dict.fromkeys((distribution.low, distribution.high)))
