"""What our sweeper takes from the Optuna plugin's private parts (`src.optuna_sweeper.plugin_api`), pinned: with
other versions of the plugin or of Optuna, a test here fails and names the part that changed."""

import optuna
import pytest
from hydra_plugins.hydra_optuna_sweeper._impl import OptunaSweeperImpl
from omegaconf import OmegaConf
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from src.optuna_sweeper import plugin_api


def plugin(params: dict[str, str], direction: object) -> OptunaSweeperImpl:
    return OptunaSweeperImpl(
        optuna.samplers.RandomSampler(seed=0), direction, None, "study", 3, 1, 0.0, None, OmegaConf.create(params)
    )


def test_overrides_become_distributions_fixed_values_and_other_overrides() -> None:
    space = plugin_api.search_space(
        [
            "opt.lr=tag(log, interval(1e-5, 1e-3))",
            "model.num_hidden=range(1, 4)",
            "model.dropout_prob=choice(0.0, 0.1)",
            "seed=3",
            "~wandb",
        ]
    )
    assert space.distributions == {
        "opt.lr": FloatDistribution(1e-5, 1e-3, log=True),
        "model.num_hidden": IntDistribution(1, 3),  # like Python's range, the end is excluded
        "model.dropout_prob": CategoricalDistribution((0.0, 0.1)),
    }
    assert space.fixed_params == {"seed": "3"}
    assert space.fixed_overrides == ["~wandb"]
    assert space.fixed == ["seed=3", "~wandb"]


@pytest.mark.parametrize("override", ["opt.lr=interval(1, 0.1)", "opt.lr=tag(log, interval(0, 1))", "x=range(3, 1)"])
def test_a_range_optuna_cannot_sample_raises(override: str) -> None:
    with pytest.raises((ValueError, AssertionError, NotImplementedError, TypeError)):
        plugin_api.search_space([override])


def test_the_command_line_wins_over_params_and_fixes_what_it_sets() -> None:
    sweeper = plugin({"opt.lr": "interval(0.1, 1)", "seed": "choice(1, 2)"}, ["maximize"])
    space = plugin_api.sweep_search_space(sweeper, ["seed=5"])
    assert space.distributions == {"opt.lr": FloatDistribution(0.1, 1.0)}
    assert space.fixed_params == {"seed": "5"}


@pytest.mark.parametrize(
    ("direction", "expected"),
    [(["maximize"], ["maximize"]), ("minimize", ["minimize"]), (["maximize", "minimize"], ["maximize", "minimize"])],
)
def test_directions_are_optunas_names(direction: object, expected: list[str]) -> None:
    assert plugin_api.directions(plugin({}, direction)) == expected


def test_a_trial_draws_its_parameters_and_becomes_its_jobs_overrides() -> None:
    sweeper = plugin({"opt.lr": "interval(0.1, 1)"}, ["maximize"])
    space = plugin_api.sweep_search_space(sweeper, ["seed=5", "~wandb"])
    trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0)).ask()
    overrides = plugin_api.trial_overrides(sweeper, trial, space)
    assert list(overrides) == [f"opt.lr={trial.params['opt.lr']}", "seed=5", "~wandb"]
    assert 0.1 <= trial.params["opt.lr"] <= 1


def test_a_grid_takes_every_value_of_a_finite_distribution() -> None:
    assert plugin_api.grid_choices(IntDistribution(1, 3)) == [1, 2, 3]
    assert plugin_api.grid_choices(FloatDistribution(0, 1, step=0.5)) == [0.0, 0.5, 1.0]
    assert plugin_api.grid_choices(CategoricalDistribution(("a", "b"))) == ["a", "b"]
    with pytest.raises(ValueError, match="GridSampler only supports discrete distributions"):
        plugin_api.grid_choices(FloatDistribution(0, 1))
