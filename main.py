"""The entry point: Hydra composes the configuration from conf/ and the command line, and calls `main()`."""

import os
import signal

# Ctrl-C ends the program quietly, with exit code 130 (128 + SIGINT): at once while Python imports what follows
# (nothing is written yet), and from `ctrl_c_exits_quietly()` on once what runs has tidied up.
if __name__ == "__main__":
    signal.signal(signal.SIGINT, lambda signum, frame: os._exit(130))

import hydra
from omegaconf import DictConfig

from src.checks.command_line import check_command_line
from src.common.exits import ctrl_c_exits_quietly, one_line_errors
from src.common.targets import EXECUTION_WHITELIST
from src.config import register_configs
from src.run import run

# The dataclasses must be in the ConfigStore before Hydra composes conf/config.yaml.
register_configs()


# No `version_base`: Hydra 1.4 uses its own defaults (no change of working directory).
# `execution_whitelist`: the only code that a config's `_target_` may name (ours: `src.*`, the callbacks); a
# config from elsewhere cannot make Hydra import and run anything else.
@hydra.main(config_path="conf", config_name="config", execution_whitelist=EXECUTION_WHITELIST)
@one_line_errors  # a refused or failed run ends with one line, not a traceback
def main(cfg: DictConfig) -> float:
    # The value returned is what sweepers such as Optuna optimise: the validation accuracy.
    return run(cfg)


if __name__ == "__main__":
    with ctrl_c_exits_quietly():
        check_command_line()  # what Hydra would end in a traceback before any of our code runs: one line
        main()
