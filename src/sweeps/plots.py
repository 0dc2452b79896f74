# matplotlib's type hints leave the `**kwargs` of its drawing methods untyped, which strict mode reports.
# pyright: reportUnknownMemberType=false
"""Pictures of a multirun, drawn beside its summary as PNG files, without a display.

For a grid (the basic sweeper), the metric of each configuration, with its spread over seeds. For an
Optuna study, Optuna's own plots of the whole study, read from its storage: the optimisation history,
the parameter importances and, where trials reported them (pruning), the intermediate values.
matplotlib and optuna are imported inside the functions: a plain run never waits for them.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from omegaconf import DictConfig

from src.common.files import write_atomically
from src.common.targets import instantiates

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from optuna import Study

    from src.sweeps.summary import SeedGroup

__all__ = ["configurations_figure", "draw_sweep", "study_figures"]

log = logging.getLogger(__name__)


def draw_sweep(sweep_dir: Path, groups: list[SeedGroup], metric: str, sweeper: DictConfig) -> list[Path]:
    """Draw the pictures of the sweep into `sweep_dir`; return their paths. `groups`: its configurations,
    best first; `sweeper`: the sweep's `hydra.sweeper` config, which says where an Optuna study is."""
    from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper

    if not instantiates(sweeper, OptunaSweeper):  # a grid: the basic sweeper, say
        figures = {f"{metric.replace('/', '_')}_by_config": configurations_figure(groups, metric)}
    elif sweeper.storage is None:
        log.info("No pictures of the study: it was kept in memory (hydra.sweeper.storage is null), and is gone.")
        return []
    else:
        figures = study_figures(_load_study(sweeper.study_name, sweeper.storage), metric)
    paths: list[Path] = []
    for name, figure in figures.items():
        paths.append(sweep_dir / f"{name}.png")
        # "tight": all of the labels and legends. Whole or not at all, as the summary's files.
        write_atomically(
            paths[-1], lambda file, figure=figure: figure.savefig(file, format="png", dpi=100, bbox_inches="tight")
        )
    return paths


def configurations_figure(groups: list[SeedGroup], metric: str) -> Figure:
    """One row per configuration, best mean at the top: a dot for each finished run, and the mean with
    a bar of ± one standard deviation over them (the seeds)."""
    from matplotlib.figure import Figure  # not pyplot: a figure of its own, drawn with no display

    keys = dict.fromkeys(key for group in groups for key in group.overrides)
    varying = [key for key in keys if len({group.overrides.get(key) for group in groups}) > 1]
    figure = Figure(figsize=(8, 1.8 + 0.4 * len(groups)), layout="constrained")
    axes = figure.subplots()
    runs = [(value, row) for row, group in enumerate(groups) for value in group.values(metric)]
    axes.plot([x for x, _ in runs], [y for _, y in runs], "o", color="tab:blue", alpha=0.6, label="a run")
    stats = [(row, *group.mean_std(metric)) for row, group in enumerate(groups)]
    spread = [(row, mean, std or 0.0) for row, mean, std in stats if mean is not None]  # std 0: a single run
    axes.errorbar(
        [mean for _, mean, _ in spread],
        [row for row, _, _ in spread],
        xerr=[std for _, _, std in spread],
        fmt="|",
        color="black",
        markersize=16,
        capsize=4,
        label="mean ± std over seeds",
    )
    axes.set_yticks(range(len(groups)), [_label(group, varying) for group in groups])
    axes.set_ylim(len(groups) - 0.5, -0.5)  # the first (best) at the top
    axes.set_title(f"{metric} per configuration")
    axes.set_xlabel(metric)
    axes.set_ylabel(", ".join(varying) or "configuration")
    axes.grid(axis="x", alpha=0.3)
    figure.legend(loc="outside lower center", ncols=2, frameon=False)
    return figure


def study_figures(study: Study, metric: str) -> dict[str, Figure]:
    """Optuna's plots of the study (whose objective is `metric`), by file name; a plot that the study cannot
    fill is left out, saying why."""
    import matplotlib
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator
    from optuna.exceptions import ExperimentalWarning
    from optuna.trial import TrialState
    from optuna.visualization import matplotlib as optuna_plots

    matplotlib.use("Agg")  # Optuna draws through pyplot, which would otherwise look for a display
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    params = {name for trial in complete for name in trial.params}
    figures: dict[str, Figure] = {}
    # Optuna marks its matplotlib plots experimental, and sets pyplot's style: both stay in here.
    with warnings.catch_warnings(), matplotlib.rc_context():
        warnings.simplefilter("ignore", ExperimentalWarning)
        if complete:
            history = optuna_plots.plot_optimization_history(study, target_name=metric)
            history.xaxis.set_major_locator(MaxNLocator(integer=True))  # trial numbers
            figures["optimization_history"] = _figure(history)
        else:
            log.info("No optimisation history: no trial of the study completed.")
        if len(complete) >= 2 and len(params) >= 2:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", UserWarning)
                importances = _figure(optuna_plots.plot_param_importances(study, target_name=metric))
            # Optuna's warning where the completed trials score alike (two trials of the same val/acc, say):
            # every parameter would be drawn as equally important, which says nothing.
            alike = [str(warning.message) for warning in caught if "importances will be equal" in str(warning.message)]
            if alike:
                plt.close(importances)
                log.info(f"No parameter importances: the completed trials score too much alike ({alike[0]})")
            else:
                figures["param_importances"] = importances
        else:
            log.info(
                f"No parameter importances: they need 2 completed trials and 2 parameters, and the study has "
                f"{len(complete)} and {len(params)}."
            )
        if any(trial.intermediate_values for trial in study.get_trials(deepcopy=False)):
            intermediate = optuna_plots.plot_intermediate_values(study)
            # Each trial reports `metric` after every epoch, as step n for epoch n (`StudyTrial`).
            intermediate.set(xlabel="Epoch", ylabel=f"{metric} after the epoch")
            intermediate.xaxis.set_major_locator(MaxNLocator(integer=True))
            figures["intermediate_values"] = _figure(intermediate)
        else:
            log.info("No intermediate values: no trial reported any.")
    for figure in figures.values():
        plt.close(figure)  # saved by the caller; pyplot would otherwise keep every figure it made
    return figures


def _load_study(name: str, storage: str) -> Study:
    import optuna

    from src.optuna_sweeper.storage import open_storage

    # Hydra calls the callback that draws in the directory the sweep ran from, where `storage` is.
    return optuna.load_study(study_name=name, storage=open_storage(storage, Path.cwd()))


def _figure(axes: Axes) -> Figure:
    """The figure of the axes that an Optuna plot returns."""
    from matplotlib.figure import Figure

    assert isinstance(axes.figure, Figure)
    return axes.figure


def _label(group: SeedGroup, keys: list[str]) -> str:
    """The configuration by its values of `keys` (those that differ between configurations), with its runs."""
    name = ", ".join(group.overrides.get(key, "") for key in keys) or "all runs"
    failed = len(group.jobs) - group.finished
    return f"{name} (n={group.finished}{f', {failed} not finished' if failed else ''})"
