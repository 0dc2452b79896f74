"""The pictures of a sweep, drawn in this process: from configurations and seeds, and from real Optuna studies."""

import logging
import statistics
import warnings
from pathlib import Path

import matplotlib
import numpy as np
import optuna
import pytest
from matplotlib.collections import LineCollection
from omegaconf import OmegaConf
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from PIL import Image

from src.optuna_sweeper.storage import open_storage
from src.sweeps.plots import configurations_figure, draw_sweep, study_figures
from src.sweeps.summary import Job, SeedGroup

SWEEPER = "src.optuna_sweeper.sweeper.ResumableOptunaSweeper"  # what `hydra/sweeper=fcn_params` instantiates


def job(name: str, num_hidden: str, seed: str, val_acc: float | None) -> Job:
    overrides = {"model.hidden_dim": "16", "model.num_hidden": num_hidden, "seed": seed}
    if val_acc is None:
        return Job(name, overrides, "failed", {})
    return Job(name, overrides, "finished", {"val/acc": val_acc})


def assert_png(path: Path) -> None:
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.width > 300 and image.height > 150


def test_configurations_show_each_run_and_the_spread_over_seeds(tmp_path: Path) -> None:
    shared = {"model.hidden_dim": "16"}
    groups = [  # best mean first, as the summary orders them
        SeedGroup(shared | {"model.num_hidden": "1"}, [job("0", "1", "1", 0.8), job("2", "1", "2", 0.9)]),
        SeedGroup(shared | {"model.num_hidden": "2"}, [job("1", "2", "1", 0.7), job("3", "2", "2", None)]),
    ]

    figure = configurations_figure(groups, "val/acc")

    (axes,) = figure.axes
    assert axes.get_title() == "val/acc per configuration"
    assert axes.get_xlabel() == "val/acc"
    assert axes.get_ylabel() == "model.num_hidden"  # what differs; model.hidden_dim=16 is the same for all
    assert [label.get_text() for label in axes.get_yticklabels()] == ["1 (n=2)", "2 (n=1, 1 not finished)"]
    assert axes.get_ylim() == (1.5, -0.5)  # the best at the top
    runs, means = axes.lines[0], axes.lines[1]
    assert np.asarray(runs.get_xydata()).tolist() == [[0.8, 0], [0.9, 0], [0.7, 1]]
    mean, std = statistics.mean([0.8, 0.9]), statistics.stdev([0.8, 0.9])
    assert np.asarray(means.get_xydata()).tolist() == [[mean, 0], [0.7, 1]]
    (bars,) = [collection for collection in axes.collections if isinstance(collection, LineCollection)]
    assert [np.asarray(segment).tolist() for segment in bars.get_segments()] == [
        [[mean - std, 0], [mean + std, 0]],
        [[0.7, 1], [0.7, 1]],  # a single run: no spread
    ]
    (legend,) = figure.legends
    assert [text.get_text() for text in legend.get_texts()] == ["a run", "mean ± std over seeds"]

    sweeper = OmegaConf.create({"_target_": "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"})
    (path,) = draw_sweep(tmp_path, groups, "val/acc", sweeper)
    assert path == tmp_path / "val_acc_by_config.png"
    assert_png(path)


def objective(trial: optuna.Trial) -> float:
    """A stand-in for training, with a best `lr` near 1e-2 and `layers` that matter less."""
    lr = trial.suggest_float("lr", 1e-4, 1.0, log=True)
    layers = trial.suggest_int("layers", 1, 3)
    for epoch in range(3):  # what a trial with pruning reports after each epoch
        trial.report((epoch + 1) / 3 / (1 + abs(lr - 1e-2) * 10 + layers / 10), epoch)
    return 1 / (1 + abs(lr - 1e-2) * 10 + layers / 10)


def study_in(storage: str | optuna.storages.BaseStorage, n_trials: int = 4) -> optuna.Study:
    study = optuna.create_study(
        study_name="study", storage=storage, direction="maximize", sampler=optuna.samplers.TPESampler(seed=0)
    )
    study.optimize(objective, n_trials=n_trials)
    return study


@pytest.mark.parametrize("form", ["database", "journal"])
def test_the_study_is_found_in_a_database_or_a_journal_file(form: str, tmp_path: Path) -> None:
    # The study is written through Optuna's own classes; `open_storage` reads it from the setting alone.
    if form == "database":
        url = f"sqlite:///{tmp_path / 'study.db'}"
        written = study_in(url)
    else:
        url = str(tmp_path / "study.log")
        written = study_in(JournalStorage(JournalFileBackend(url)))
    read = optuna.load_study(study_name="study", storage=open_storage(url, tmp_path))
    assert [trial.params for trial in read.trials] == [trial.params for trial in written.trials]


def test_a_study_is_drawn_with_optunas_plots(tmp_path: Path) -> None:
    study_in(JournalStorage(JournalFileBackend(str(tmp_path / "study.log"))))
    sweeper = OmegaConf.create({"_target_": SWEEPER, "study_name": "study", "storage": str(tmp_path / "study.log")})
    style = dict(matplotlib.rcParams)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        study = optuna.load_study(study_name="study", storage=open_storage(sweeper.storage, tmp_path))
        figures = study_figures(study, "val/acc")
        paths = draw_sweep(tmp_path, [], "val/acc", sweeper)

    assert [str(warning.message) for warning in caught] == []  # Optuna's ExperimentalWarning stays in
    # And so does the style it sets: only the backend changed, to one that needs no display.
    assert {key for key, value in matplotlib.rcParams.items() if value != style[key]} <= {"backend", "backend_fallback"}
    assert matplotlib.get_backend().lower() == "agg"
    history, importances, intermediate = (figures[name].axes[0] for name in figures)
    assert list(figures) == ["optimization_history", "param_importances", "intermediate_values"]
    assert (history.get_title(), history.get_xlabel(), history.get_ylabel()) == (
        "Optimization History Plot",
        "Trial",
        "val/acc",
    )
    assert (importances.get_title(loc="left"), importances.get_xlabel(), importances.get_ylabel()) == (
        "Hyperparameter Importances",
        "Hyperparameter Importance",
        "Hyperparameter",
    )
    assert {label.get_text() for label in importances.get_yticklabels()} == {"lr", "layers"}
    assert (intermediate.get_title(), intermediate.get_xlabel(), intermediate.get_ylabel()) == (
        "Intermediate Values Plot",
        "Epoch",
        "val/acc after the epoch",
    )
    # Trials and epochs are counted in whole numbers.
    assert all(tick == int(tick) for axes in (history, intermediate) for tick in axes.get_xticks())
    assert len(intermediate.lines) == 4  # one per trial
    assert paths == [tmp_path / f"{name}.png" for name in figures]
    for path in paths:
        assert_png(path)


def test_plots_that_the_study_cannot_fill_are_left_out_saying_why(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    study = optuna.create_study(study_name="study", storage=f"sqlite:///{tmp_path / 'study.db'}")
    study.optimize(lambda trial: trial.suggest_float("lr", 0, 1), n_trials=3)  # one parameter, nothing reported
    sweeper = OmegaConf.create(
        {"_target_": SWEEPER, "study_name": "study", "storage": f"sqlite:///{tmp_path / 'study.db'}"}
    )

    with caplog.at_level(logging.INFO):
        paths = draw_sweep(tmp_path, [], "val/acc", sweeper)

    assert paths == [tmp_path / "optimization_history.png"]
    assert "No parameter importances: they need 2 completed trials and 2 parameters, and the study has 3 and 1." in (
        caplog.messages
    )
    assert "No intermediate values: no trial reported any." in caplog.messages


def test_no_importances_are_drawn_for_trials_that_score_alike(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    study = optuna.create_study(direction="maximize")
    # As two trials of a short study can: the same val/acc (and so no parameter that tells them apart).
    study.optimize(lambda trial: 0.7 + 0 * trial.suggest_float("lr", 0, 1) * trial.suggest_int("layers", 1, 3), 2)

    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.INFO):
        warnings.simplefilter("always")
        figures = study_figures(study, "val/acc")

    assert list(figures) == ["optimization_history"]
    assert [str(warning.message) for warning in caught] == []  # Optuna's warning is not shown
    assert caplog.messages[-2].startswith(
        "No parameter importances: the completed trials score too much alike (Target and region quantiles select "
        "the same set of trials."
    )


def test_a_study_kept_in_memory_has_no_pictures(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    sweeper = OmegaConf.create(
        {"_target_": SWEEPER, "study_name": "study", "storage": None}
    )  # the Optuna plugin's default
    with caplog.at_level(logging.INFO):
        assert draw_sweep(tmp_path, [], "val/acc", sweeper) == []
    assert caplog.messages == [
        "No pictures of the study: it was kept in memory (hydra.sweeper.storage is null), and is gone."
    ]


def test_a_picture_of_many_configurations_with_long_values_stays_readable(tmp_path: Path) -> None:
    # 200 configurations, each with a value of 100,000 characters (a path, say): the best 40, shortened.
    groups = [
        SeedGroup({"dm.root": f"{index:03d}{'x' * 100_000}", "model.num_hidden": str(index % 3)}, [])
        for index in range(200)
    ]
    for index, group in enumerate(groups):
        group.jobs.append(Job(str(index), group.overrides, "finished", {"val/acc": 1 - index / 1000}))

    figure = configurations_figure(groups, "val/acc")

    (axes,) = figure.axes
    assert axes.get_title() == "val/acc per configuration (the best 40 of 200)"
    labels = [label.get_text() for label in axes.get_yticklabels()]
    assert len(labels) == 40 and all(len(label) <= 40 + len(" (n=1)") for label in labels)
    assert labels[0].startswith("000xxx") and "…" in labels[0]
    path = tmp_path / "picture.png"
    figure.savefig(path, dpi=100, bbox_inches="tight")  # pyright: ignore[reportUnknownMemberType] (its **kwargs)
    with Image.open(path) as image:
        assert image.width < 1_500 and image.height < 2_000


def test_the_intermediate_values_tell_every_trial_apart_and_count_epochs_in_whole_numbers() -> None:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(25):  # more than tab20's twenty colours, and one epoch each
        trial = study.ask()
        trial.report(trial.suggest_float("lr", 0, 1), step=1)
        study.tell(trial, trial.params["lr"])

    figures = study_figures(study, "val/acc")

    intermediate = figures["intermediate_values"].axes[0]
    assert len(intermediate.lines) == 25
    assert len({line.get_color() for line in intermediate.lines}) == 25  # pyright: ignore[reportUnknownMemberType]
    assert sorted(int(text.get_text()) for text in intermediate.texts) == list(range(25))  # each line's number
    assert intermediate.get_legend() is None  # a legend of 25 entries in repeated colours says nothing
    assert list(intermediate.get_xticks()) == [1]  # one epoch: one whole-number tick
    assert figures["intermediate_values"].axes[1].get_ylabel() == "Trial"  # the colour bar
