"""The entry point: Hydra composes the configuration and calls `main()` with it."""

import sys
from pathlib import Path
from types import TracebackType

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.plugins import Plugins
from hydra.types import RunMode
from omegaconf import DictConfig

from src.errors import RunFailedError, UserError, exit_on_user_error
from src.optuna_sweeper import ResumableOptunaSweeper
from src.run import register_configs, run
from src.run_record import RunRecord, check_rerun_directory

# The dataclasses must be in the ConfigStore before Hydra composes conf/config.yaml.
register_configs()
# Hydra finds plugins in the `hydra_plugins` package; ours lives in src/, so it is registered by hand.
Plugins.instance().register(ResumableOptunaSweeper)


# No `version_base`: Hydra 1.4 uses its own defaults (no change of working directory).
# `execution_whitelist`: the only code that a config's `_target_` may name (our callbacks); a
# config from elsewhere cannot make Hydra import and run anything else.
@hydra.main(config_path="conf", config_name="config", execution_whitelist=("src.*",))
def main(cfg: DictConfig) -> float:
    output_dir = Path(HydraConfig.get().runtime.output_dir)
    record = RunRecord(cfg, output_dir)  # Hydra's record of the run, .hydra/ (src/run_record.py)
    with exit_on_user_error():
        try:
            # The value returned is what sweepers such as Optuna optimise.
            return run(cfg, output_dir=output_dir, on_checked=record.save_if_new, on_accepted=record.accept)
        except UserError:
            record.take_back()  # a refused run leaves the directory as it was
            raise
        except RunFailedError as error:
            if HydraConfig.get().mode is RunMode.MULTIRUN:
                raise  # Hydra records the job as failed (a sweeper, its trial), and the sweep goes on
            raise UserError(str(error)) from None


def report_failed_job(kind: type[BaseException], error: BaseException, traceback: TracebackType | None) -> None:
    """Where a multirun ends with a job's error, Hydra reports it through `sys.excepthook`: a failed run
    as one line, anything else with its traceback."""
    if isinstance(error, RunFailedError):
        print(f"Error: {error}", file=sys.stderr)
    else:
        sys.__excepthook__(kind, error, traceback)


if __name__ == "__main__":
    with exit_on_user_error():
        check_rerun_directory(sys.argv[1:])
    sys.excepthook = report_failed_job
    main()
