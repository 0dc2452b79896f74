"""Points the Optuna plugin's own tests at hydra-example's sweeper (scripts/optuna-plugin-tests.sh):
`hydra/sweeper=optuna` becomes `hydra/sweeper=resumable_optuna` (`StudySweeperConf`), whose `_target_`
is our `ResumableOptunaSweeper`."""

from hydra.core.config_store import ConfigStore

# Importing src.optuna_sweeper.config registers the plugin's configs first: ours replace its `optuna`.
from src.optuna_sweeper.config import StudySweeperConf
from src.optuna_sweeper.sweeper import ResumableOptunaSweeper, register_sweeper

__all__ = ["ResumableOptunaSweeper"]  # what Hydra's plugin discovery finds here

register_sweeper()
ConfigStore.instance().store(
    group="hydra/sweeper", name="optuna", node=StudySweeperConf, provider="optuna_sweeper", replace=True
)
