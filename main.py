"""The entry point: Hydra composes the configuration and calls `main()` with it."""

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.plugins import Plugins
from omegaconf import DictConfig

from src.errors import UserError
from src.optuna_sweeper import ResumableOptunaSweeper
from src.run import register_configs, run

# The dataclasses must be in the ConfigStore before Hydra composes conf/config.yaml.
register_configs()
# Hydra finds plugins in the `hydra_plugins` package; ours lives in src/, so it is registered by hand.
Plugins.instance().register(ResumableOptunaSweeper)


# No `version_base`: Hydra 1.4 uses its own defaults (no change of working directory).
# `execution_whitelist`: the only code that a config's `_target_` may name (our callbacks); a
# config from elsewhere cannot make Hydra import and run anything else.
@hydra.main(config_path="conf", config_name="config", execution_whitelist=("src.*",))
def main(cfg: DictConfig) -> float:
    try:
        # The value returned is what sweepers such as Optuna optimise.
        return run(cfg, output_dir=Path(HydraConfig.get().runtime.output_dir))
    except UserError as error:
        sys.exit(f"Error: {error}")


if __name__ == "__main__":
    main()
