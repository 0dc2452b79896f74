"""The config of our Optuna sweeper: the plugin's, with a `pruner` chosen like its `sampler`.

`hydra/sweeper/resumable_optuna` is the plugin's `hydra/sweeper/optuna` with our sweeper as its
`_target_` and one more setting, `pruner`, an option of the group `hydra/sweeper/pruner`:
`hydra/sweeper/pruner=median` on the command line, and `--cfg hydra -p hydra.sweeper.pruner` shows
its settings. `register_sweeper()` puts them in Hydra's ConfigStore.
"""

from dataclasses import dataclass, field
from typing import Any

from hydra_plugins.hydra_optuna_sweeper.config import OptunaSweeperConf
from omegaconf import MISSING

__all__ = [
    "PRUNER_TARGETS",
    "HyperbandPrunerConfig",
    "MedianPrunerConfig",
    "NopPrunerConfig",
    "StudySweeperConf",
]

# What a `pruner` config may instantiate: Optuna's pruners, nothing else.
PRUNER_TARGETS = ("optuna.pruners.*",)


@dataclass
class PrunerConfig:
    _target_: str = MISSING


@dataclass
class NopPrunerConfig(PrunerConfig):
    """Never prune: every trial trains for all its epochs.
    https://optuna.readthedocs.io/en/stable/reference/generated/optuna.pruners.NopPruner.html"""

    _target_: str = "optuna.pruners.NopPruner"


@dataclass
class MedianPrunerConfig(PrunerConfig):
    """Stop a trial whose best accuracy so far is below the median of the other trials' at the same epoch.
    https://optuna.readthedocs.io/en/stable/reference/generated/optuna.pruners.MedianPruner.html"""

    _target_: str = "optuna.pruners.MedianPruner"
    n_startup_trials: int = 5  # no pruning until this many trials have finished
    n_warmup_steps: int = 0  # no pruning in a trial's first epochs
    interval_steps: int = 1  # decide every this many epochs
    n_min_trials: int = 1  # compare only with epochs that at least this many trials reached


@dataclass
class HyperbandPrunerConfig(PrunerConfig):
    """Successive halving in several brackets: a trial goes on only while it is among the best
    1/`reduction_factor` of its bracket at each rung (`min_resource` epochs, times `reduction_factor`, ...).
    https://optuna.readthedocs.io/en/stable/reference/generated/optuna.pruners.HyperbandPruner.html"""

    _target_: str = "optuna.pruners.HyperbandPruner"
    min_resource: int = 1  # epochs every trial trains before it can be pruned
    max_resource: Any = "auto"  # the most epochs of a trial; "auto": those of the first finished trial
    reduction_factor: int = 3
    bootstrap_count: int = 0


@dataclass
class StudySweeperConf(OptunaSweeperConf):
    _target_: str = "src.optuna_sweeper.sweeper.ResumableOptunaSweeper"
    defaults: list[Any] = field(default_factory=lambda: [{"sampler": "tpe"}, {"pruner": "none"}])
    pruner: PrunerConfig = MISSING
