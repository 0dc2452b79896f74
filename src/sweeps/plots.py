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
from src.common.text import shorten

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from optuna import Study

    from src.sweeps.summary import SeedGroup

__all__ = ["configurations_figure", "draw_sweep", "study_figures"]

log = logging.getLogger(__name__)
MAX_ROWS = 40  # configurations in a picture of a grid: the best ones, so that it stays readable
LABEL_WIDTH = 40  # characters of a configuration's label; longer ones are shortened in the middle
MAX_LABELLED_LINES = 50  # trials whose lines are labelled with their number; above, the colour bar alone


def draw_sweep(sweep_dir: Path, groups: list[SeedGroup], metric: str, sweeper: DictConfig) -> list[Path]:
    """Draw the pictures of the sweep into `sweep_dir`; return their paths. `groups`: its configurations,
    best first; `sweeper`: the sweep's `hydra.sweeper` config, which says where an Optuna study is."""
    from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper

    from src.optuna_sweeper.study import stored_study

    study = stored_study(sweeper)
    if study is not None:
        figures = study_figures(study, metric)
    elif instantiates(sweeper, OptunaSweeper):
        log.info("No pictures of the study: it was kept in memory (hydra.sweeper.storage is null), and is gone.")
        return []
    else:  # a grid: the basic sweeper, say
        figures = {f"{metric.replace('/', '_')}_by_config": configurations_figure(groups, metric)}
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

    total, groups = len(groups), groups[:MAX_ROWS]
    keys = dict.fromkeys(key for group in groups for key in group.overrides)
    varying = [key for key in keys if len({group.overrides.get(key) for group in groups}) > 1]
    if len({group.data for group in groups}) > 1:  # results of other data: never pooled, and labelled so
        varying.append("data")
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
    axes.set_title(f"{metric} per configuration" + (f" (the best {MAX_ROWS} of {total})" if total > MAX_ROWS else ""))
    axes.set_xlabel(metric)
    axes.set_ylabel(shorten(", ".join(varying), 2 * LABEL_WIDTH) or "configuration")
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
            figures["intermediate_values"] = _figure(_intermediate_values(study, metric))
        else:
            log.info("No intermediate values: no trial reported any.")
    for figure in figures.values():
        plt.close(figure)  # saved by the caller; pyplot would otherwise keep every figure it made
    return figures


def _figure(axes: Axes) -> Figure:
    """The figure of the axes that an Optuna plot returns."""
    from matplotlib.figure import Figure

    assert isinstance(axes.figure, Figure)
    return axes.figure


def _intermediate_values(study: Study, metric: str) -> Axes:
    """Optuna's plot of each trial's `metric` after every epoch, its trials told apart at any number of them:
    coloured along a colour map by their number (a colour bar reads it), each line's end labelled with it."""
    import numpy as np
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.ticker import FixedLocator, MaxNLocator
    from optuna.visualization import matplotlib as optuna_plots

    axes = optuna_plots.plot_intermediate_values(study)
    # Each trial reports `metric` after every epoch, as step n for epoch n (`StudyTrial`).
    axes.set(xlabel="Epoch", ylabel=f"{metric} after the epoch")
    lines = axes.get_lines()
    numbers = [int(str(line.get_label()).removeprefix("Trial")) for line in lines]
    scale, colour_map = Normalize(min(numbers), max(numbers) + 1e-9), colormaps["viridis"]
    for line, number in zip(lines, numbers, strict=True):
        line.set_color(colour_map(float(scale(number))))
        if len(lines) <= MAX_LABELLED_LINES:
            epoch, value = (float(coordinate) for coordinate in np.asarray(line.get_xydata())[-1])
            axes.annotate(str(number), (epoch, value), xytext=(3, 0), textcoords="offset points", fontsize=7)
    legend = axes.get_legend()
    if legend is not None:
        legend.remove()
    axes.figure.colorbar(ScalarMappable(scale, colour_map), ax=axes, label="Trial")
    epochs = sorted({step for trial in study.get_trials(deepcopy=False) for step in trial.intermediate_values})
    few = epochs[-1] - epochs[0] <= 20
    axes.xaxis.set_major_locator(FixedLocator(range(epochs[0], epochs[-1] + 1)) if few else MaxNLocator(integer=True))
    axes.set_xlim(epochs[0] - 0.5, epochs[-1] + 0.5)  # one epoch too: a tick at it, not 0.95 to 1.05
    return axes


def _label(group: SeedGroup, keys: list[str]) -> str:
    """The configuration by its values of `keys` (those that differ between configurations, `data` among
    them), shortened to fit beside the picture, with its runs."""
    values = [group.data if key == "data" else group.overrides.get(key, "") for key in keys]
    name = shorten(", ".join(values), LABEL_WIDTH) or "all runs"
    failed = len(group.jobs) - group.finished
    return f"{name} (n={group.finished}{f', {failed} not finished' if failed else ''})"
