"""Our Optuna sweeper: the plugin's settings and search space, run so that no slot waits, as one study that
several sweep processes can share, with trials that the study's pruner can stop.

The plugin's sweeper asks Optuna for `n_jobs` trials, hands them to the launcher as one batch, and tells
Optuna their results when the whole batch has returned: a slot whose trial ends first waits for the
slowest, and a sweep killed in mid-batch loses the results that the batch had already finished. Here each
of `n_jobs` slots asks for one trial, launches it as a batch of one, and asks for the next as soon as the
study has the trial's result, which the job records itself (`StudyTrial`).

`n_trials` is the size of the whole study (`SharedStudy`), however many commands and sweep processes
it takes: a killed sweep, run again, ends as if it had never stopped (the trials it was running run again,
with the same parameters), a finished one only reports its best trial, and sweep processes pointed at the
same study (one per SLURM allocation, say) run its trials between them. Job directory N holds trial N,
which is how the job finds its trial in the study (`this_jobs_trial()`).
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from hydra.core.config_store import ConfigStore
from hydra.core.plugins import Plugins
from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import BaseSubmititLauncher
from omegaconf import DictConfig, OmegaConf, open_dict, read_write
from omegaconf.errors import OmegaConfBaseException
from typing_extensions import override

from src.common.errors import UserError
from src.common.exits import exit_on_user_error
from src.common.files import write_atomically
from src.optuna_sweeper.config import (
    PRUNER_TARGETS,
    HyperbandPrunerConfig,
    MedianPrunerConfig,
    NopPrunerConfig,
    StudySweeperConf,
)
from src.optuna_sweeper.slots import Trials
from src.optuna_sweeper.space_check import refuse_values_that_never_run
from src.optuna_sweeper.study import SharedStudy

if TYPE_CHECKING:
    import optuna
    from optuna.distributions import BaseDistribution
    from optuna.samplers import BaseSampler

__all__ = ["ResumableOptunaSweeper", "register_sweeper"]

log = logging.getLogger(__name__)


class ResumableOptunaSweeper(OptunaSweeper):
    """The plugin's sweeper (whose `self.sweeper` holds the settings and the search-space helpers), with
    our loop of trials instead of its batches, and a `pruner` (`StudySweeperConf`)."""

    def __init__(self, *, pruner: DictConfig, **plugin_settings: Any) -> None:
        super().__init__(**plugin_settings)
        self.pruner = pruner

    @override
    def sweep(self, arguments: list[str]) -> None:
        with exit_on_user_error():
            self._sweep(arguments)

    def _sweep(self, arguments: list[str]) -> None:
        from hydra.utils import instantiate

        from src.optuna_sweeper import plugin_api

        plugin = self.sweeper
        config, launcher = plugin.config, plugin.launcher
        assert config is not None and launcher is not None, "setup() comes first"
        # The plugin's own helpers turn `params` and the command line's sweeps into Optuna distributions.
        space = plugin_api.sweep_search_space(plugin, arguments)
        refuse_values_that_never_run(space, self._refusal)
        sampler, n_trials = self._sampler(space.distributions)
        directions = plugin_api.directions(plugin)

        study = SharedStudy.open(
            storage=plugin.storage,
            cwd=Path(config.hydra.runtime.cwd),
            name=plugin.study_name,
            sampler=sampler,
            pruner=instantiate(self.pruner, _execution_whitelist_=PRUNER_TARGETS),
            directions=directions,
        )
        where = "memory" if plugin.storage is None else str(plugin.storage)
        study.bind(self._settings(space.fixed, space.distributions), space.distributions, directions, where=where)
        # The basic launcher runs each job in this process: one at a time.
        slots = plugin.n_jobs if isinstance(launcher, BaseSubmititLauncher) else 1
        log.info(
            f"Study {study.study.study_name} in {where} ({type(study.study.sampler).__name__}, "
            f"{type(study.study.pruner).__name__}, {' and '.join(directions)}): {study.progress(n_trials)}; "
            f"trials run {slots} at a time."
        )
        Path(plugin.sweep_dir).mkdir(parents=True, exist_ok=True)  # for the results, even with no trial to run

        def overrides(trial: optuna.Trial) -> Sequence[str]:
            return plugin_api.trial_overrides(plugin, trial, space)

        trials = Trials(study, launcher, overrides, n_trials, plugin.max_failure_rate, len(directions))
        with study.heartbeat():
            try:
                trials.run(slots)
            except BaseException:
                study.give_up_mine()  # Ctrl-C, or a job that stopped the sweep: they run again next time
                raise
        self._report_best(study.study, directions)

    def _sampler(self, search_space: dict[str, BaseDistribution]) -> tuple[BaseSampler, int]:
        """The sampler, and the number of trials: a GridSampler, which needs the search space (the plugin
        leaves it as its class with its settings), has no more trials than its grid has points."""
        from optuna.samplers import GridSampler

        plugin = self.sweeper
        sampler = cast("BaseSampler | functools.partial[BaseSampler]", plugin.sampler)  # pyright: ignore[reportUnknownMemberType]
        if not isinstance(sampler, functools.partial):
            return sampler, plugin.n_trials
        assert sampler.func is GridSampler
        from src.optuna_sweeper.plugin_api import grid_choices

        grid = {name: grid_choices(distribution) for name, distribution in search_space.items()}
        return sampler(grid), min(plugin.n_trials, math.prod(len(values) for values in grid.values()))

    def _settings(self, fixed: list[str], search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        """What the study is bound to: the jobs' config, with the overrides every trial gets, but for the
        searched parameters."""
        from src.checks.credentials import refuse_credentials
        from src.records.identity import plain_config

        plugin = self.sweeper
        assert plugin.hydra_context is not None and plugin.config is not None, "setup() comes first"
        config = plugin.hydra_context.config_loader.load_sweep_config(plugin.config, fixed)
        task = OmegaConf.masked_copy(config, [str(key) for key in config if key != "hydra"])
        refuse_credentials(task)  # the study stores them
        settings = plain_config(cast(dict[str, Any], OmegaConf.to_container(task, resolve=True)))
        for name in search_space:
            *parents, leaf = name.lstrip("+").split(".")
            node = functools.reduce(lambda node, key: node.get(key, {}), parents, settings)
            node.pop(leaf, None)
        return settings

    def _refusal(self, overrides: list[str]) -> str | None:
        """Why a job of these overrides would be refused as its config is checked (`checked_config()`), or None."""
        from hydra.errors import HydraException

        from src.checks.schema import checked_config

        plugin = self.sweeper
        assert plugin.hydra_context is not None and plugin.config is not None, "setup() comes first"
        try:
            config = plugin.hydra_context.config_loader.load_sweep_config(plugin.config, overrides)
            with read_write(config), open_dict(config):
                del config["hydra"]  # the job's own config, as Hydra gives it to the job
            checked_config(config)
        except UserError as error:
            return str(error)
        except (HydraException, OmegaConfBaseException) as error:  # an override that the schema does not take
            return str(error).strip().splitlines()[0]
        return None

    def _report_best(self, study: optuna.Study, directions: list[str]) -> None:
        """Log the best trial (or the Pareto front) and write it to `optimization_results.yaml`, as the plugin does."""
        results: dict[str, Any] = {"name": "optuna"}
        if len(directions) == 1:
            try:
                best = study.best_trial
            except ValueError:  # no trial completed
                raise UserError(
                    f"no trial of the study {study.study_name} has completed: the job directories' logs say why."
                ) from None
            results |= {"best_params": best.params, "best_value": best.value}
            log.info(f"Best parameters: {best.params}")
            log.info(f"Best value: {best.value}")
        else:
            results["solutions"] = [{"params": trial.params, "values": trial.values} for trial in study.best_trials]
            log.info(f"Number of Pareto solutions: {len(study.best_trials)}")
            for trial in study.best_trials:
                log.info(f"    Values: {trial.values}, Params: {trial.params}")
        text = OmegaConf.to_yaml(OmegaConf.create(results)).encode()
        write_atomically(Path(self.sweeper.sweep_dir) / "optimization_results.yaml", lambda file: file.write(text))


def register_sweeper() -> None:
    """Store the sweeper's config and the pruners in Hydra's ConfigStore, beside the plugin's samplers, and
    register the sweeper as a Hydra plugin: Hydra looks for plugins in the `hydra_plugins` package, and ours
    lives here instead."""
    cs = ConfigStore.instance()
    cs.store(group="hydra/sweeper", name="resumable_optuna", node=StudySweeperConf, provider="hydra-example")
    for name, node in (("none", NopPrunerConfig), ("median", MedianPrunerConfig), ("hyperband", HyperbandPrunerConfig)):
        cs.store(group="hydra/sweeper/pruner", name=name, node=node, provider="hydra-example")
    Plugins.instance().register(ResumableOptunaSweeper)
