"""Each class of hostile input is closed at its root: these tests try each mechanism with inputs that are not in
the table of refusals (tests/test_refusals.py), so that they check the class and not the examples listed there."""

import errno
import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from torch import nn

from src.common.errors import UserError
from src.common.exits import exit_on_user_error, user_error_line
from src.model import SimpleCNNFactory
from src.optimisation import OptimisationCfg
from src.optuna_sweeper.plugin_api import SearchSpace
from src.optuna_sweeper.space_check import refuse_values_that_never_run
from src.optuna_sweeper.storage import open_storage
from src.records.metrics import read_result
from src.sweeps.summary import record_job, summarise_sweep
from tests.helpers import STOPPABLE, STUDY, TINY, RunMain, Train, load_study, load_study_storage, program_env, start

SECRET = "0123456789abcdef0123456789abcdef01234567"  # looks like an API key, and is nowhere else


def assert_one_line(result: subprocess.CompletedProcess[str], start_of_line: str) -> None:
    """The program ended with exit code 1 and one line on stderr, which starts so; no traceback."""
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr, result.stdout + result.stderr
    assert result.stderr.startswith(start_of_line), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def written(tmp_path: Path) -> list[Path]:
    return [path for path in tmp_path.rglob("*") if "conf" not in path.relative_to(tmp_path).parts]


# 1. Secrets


@pytest.mark.parametrize(
    "args",
    [
        ("--multirun", "seed=1,2", "hydra.sweep.subdir=${hydra.job.num}_${oc.env:WANDB_API_KEY}"),
        ("hydra.job_logging.handlers.file.filename=${hydra:runtime.output_dir}/${oc.env:WANDB_API_KEY}.log",),
        (*STUDY, "wandb.group=choice(a,${oc.env:WANDB_API_KEY})"),
        (*STUDY, "hydra.sweeper.storage=${oc.env:WANDB_API_KEY}.journal"),
        ("--config-dir", "conf", "+experiment=leaky"),
        ("--multirun", "hydra/launcher=submitit_local", f"hydra.launcher.name={SECRET}"),
    ],
    ids=["per-job-subdir", "log-file", "swept-on-the-command-line", "study-file", "run-dir-in-a-file", "launcher"],
)
def test_a_secret_anywhere_in_the_config_as_it_is_used_is_refused_before_anything_is_written(
    run_main: RunMain, tmp_path: Path, args: tuple[str, ...]
) -> None:
    (tmp_path / "conf" / "experiment").mkdir(parents=True)
    (tmp_path / "conf" / "experiment" / "leaky.yaml").write_text(
        "# @package _global_\nhydra:\n  run:\n    dir: out/${oc.env:WANDB_API_KEY}\n"
    )
    result = run_main(*args, *TINY, env={"WANDB_API_KEY": SECRET})
    assert_one_line(result, "Error: the config holds the W&B API key, in ")
    assert SECRET not in result.stdout + result.stderr
    assert written(tmp_path) == []


def test_the_key_that_wandb_login_saved_is_a_secret_too(run_main: RunMain, tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / ".netrc").write_text(f"machine api.wandb.ai\n  login user\n  password {SECRET}\n")
    (home / ".netrc").chmod(0o600)
    result = run_main(f"hydra.run.dir=out/{SECRET}", env={"HOME": str(home), "WANDB_API_KEY": ""})
    assert_one_line(result, "Error: the config holds the W&B API key, in hydra.run.dir, ")
    assert not (tmp_path / "out").exists()


# 2. Files of the wrong kind


@pytest.mark.parametrize(
    ("path", "args", "line"),
    [
        ("out/.hydra/config.yaml", (), "Error: out/.hydra/config.yaml is a folder, where the program writes a file"),
        ("out/.hydra/hydra.yaml", (), "Error: out/.hydra/hydra.yaml is a folder, where the program writes a file"),
        ("logs/run.log", ("hydra.job_logging.handlers.file.filename=logs/run.log",), "Error: logs/run.log is a folder"),
    ],
    ids=["record's-config", "record's-hydra-config", "a-log-file-elsewhere"],
)
def test_a_folder_where_a_file_is_written_is_one_line_that_names_it(
    run_main: RunMain, tmp_path: Path, path: str, args: tuple[str, ...], line: str
) -> None:
    (tmp_path / path).mkdir(parents=True)
    assert_one_line(run_main("hydra.run.dir=out", *args, *TINY), line)


def test_an_os_error_of_a_job_in_a_sweep_is_one_line(run_main: RunMain, tmp_path: Path) -> None:
    (tmp_path / "sweep" / "1").mkdir(parents=True)
    (tmp_path / "sweep" / "1" / "main.log").mkdir()
    result = run_main("--multirun", "seed=1,2", *TINY, "hydra.sweep.dir=sweep")
    assert_one_line(result, "Error: sweep/1/main.log is a folder, where the program writes a file")


def test_an_error_that_is_a_bug_keeps_its_traceback() -> None:
    # An OSError that names no path says nothing the user can act on; a ValueError is a bug.
    assert user_error_line(OSError(errno.EIO, "Input/output error")) is None
    assert user_error_line(ValueError("wrong")) is None
    with pytest.raises(ValueError, match="wrong"), exit_on_user_error():
        raise ValueError("wrong")
    # An OSError on a path, also as the cause of another error, is the user's to fix.
    wrapped = ValueError("Unable to configure handler 'file'")
    wrapped.__cause__ = IsADirectoryError(errno.EISDIR, "Is a directory", "/somewhere/a.log")
    assert user_error_line(wrapped) == (
        "/somewhere/a.log is a folder, where the program writes a file: move it away, or choose another path."
    )


# 3. A damaged study is never written on


def test_no_process_appends_to_a_journal_whose_last_record_was_cut(tmp_path: Path) -> None:
    journal = tmp_path / "study.journal"
    study = optuna.create_study(study_name="s", storage=open_storage("study.journal", tmp_path))
    study.tell(study.ask({"x": FloatDistribution(0, 1)}), 1.0)
    # Another process stops in the middle of a record, once the study is open here.
    with journal.open("ab") as file:
        file.write(b'{"op_code": 4, "worker_id": "w", "study_id": 0, "datetime_start": "2026-')
    damaged = journal.read_bytes()
    with pytest.raises(UserError, match="ends in a record cut short"):
        study.ask()
    assert journal.read_bytes() == damaged
    with pytest.raises(UserError, match="ends in a record cut short"):
        open_storage("study.journal", tmp_path)


@pytest.mark.parametrize("line", [b"[1, 2]", b'{"no_op_code": 1}', b"\xff\xfe"], ids=["a-list", "no-op-code", "bytes"])
def test_a_journal_with_a_line_that_is_no_record_is_refused_before_it_is_opened(tmp_path: Path, line: bytes) -> None:
    journal = tmp_path / "study.journal"
    study = optuna.create_study(study_name="s", storage=load_study_storage(journal))
    study.tell(study.ask({"x": FloatDistribution(0, 1)}), 1.0)
    lines = journal.read_bytes().split(b"\n")
    journal.write_bytes(b"\n".join([*lines[:3], line, *lines[3:]]))
    before = journal.read_bytes()
    with pytest.raises(UserError, match=r"line 4 of the study's journal .*study\.journal is not a record of Optuna's"):
        open_storage("study.journal", tmp_path)
    assert journal.read_bytes() == before


# 4. The config's schema, W&B's settings, code that a config names


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (("~wandb",), "Error: ~wandb deletes wandb, which every run needs: change its settings instead"),
        (("~gpu",), "Error: ~gpu deletes gpu, which every run needs: set it instead (gpu=VALUE)."),
        (("--multirun", "hydra/sweeper=null"), "Error: hydra/sweeper=null: a config group takes the name of one"),
        (("+experiment=null",), "Error: +experiment=null: a config group takes the name of one of its options"),
    ],
    ids=["wandb", "gpu", "sweeper", "experiment"],
)
def test_deleting_a_part_of_the_schema_or_a_group_is_one_line(
    run_main: RunMain, args: tuple[str, ...], line: str
) -> None:
    assert_one_line(run_main(*args), line)


@pytest.mark.parametrize(
    "args",
    [("--multirun", "seed=1,2", "hydra.sweep.dir=${oc.env:NO_SUCH_VAR}"), ("hydra.job.name=${oc.env:NO_SUCH_VAR}",)],
    ids=["sweep-dir", "log-file's-name"],
)
def test_a_value_of_hydras_part_that_cannot_be_resolved_is_one_line(
    run_main: RunMain, tmp_path: Path, args: tuple[str, ...]
) -> None:
    assert_one_line(run_main(*args), "Error: cannot resolve hydra.")
    assert written(tmp_path) == []


def test_a_config_without_a_part_of_its_schema_is_refused_also_where_run_is_called(train: Train) -> None:
    with pytest.raises(UserError, match=r"the config has no seed \(deleted by ~seed\?\)"):
        train("~seed", *TINY)


@pytest.mark.parametrize(
    ("optimizer", "line"),
    [
        ({"optimizer_cls": "torch.optim.SparseAdam"}, "SparseAdam does not support dense gradients"),
        ({"optimizer_kwargs": {"betas": 0.9}}, "torch.optim.AdamW cannot train with"),
        ({"optimizer_cls": "torch.optim.Rprop", "weight_decay": 0.01}, "weight_decay=0.01: Rprop.__init__() got an"),
    ],
    ids=["dense-gradients", "a-number-for-a-pair", "weight-decay-it-has-not"],
)
def test_whatever_an_optimiser_raises_for_the_settings_is_one_line(optimizer: dict[str, object], line: str) -> None:
    with pytest.raises(UserError, match=re.escape(line)):
        OptimisationCfg(**optimizer).build(nn.Linear(4, 2).parameters())  # pyright: ignore[reportArgumentType]


def test_an_optimiser_without_weight_decay_trains_where_none_is_asked_for() -> None:
    optimizer = OptimisationCfg(optimizer_cls="torch.optim.Rprop").build(nn.Linear(4, 2).parameters())
    assert "weight_decay" not in optimizer.defaults


def test_a_setting_that_wandb_refuses_is_one_line_that_names_ours(train: Train) -> None:
    with pytest.raises(UserError, match=r"^W&B refuses wandb.tags: Tag '.*' is 65 characters"):
        train(*TINY, "wandb.mode=offline", "wandb.dir=wb", f"wandb.tags=[{'t' * 65}]")


def test_wandb_online_without_a_key_is_told_to_set_one(train: Train, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(Path.cwd()))  # no ~/.netrc
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    with pytest.raises(UserError, match=r"\(Online, W&B needs your API key: set WANDB_API_KEY, or use wandb.mode="):
        train(*TINY, "wandb.mode=online", "wandb.dir=wb")


def test_code_that_a_config_file_names_is_refused_before_hydra_creates_it(run_main: RunMain, tmp_path: Path) -> None:
    (tmp_path / "conf" / "experiment").mkdir(parents=True)
    (tmp_path / "conf" / "experiment" / "callback.yaml").write_text(
        "# @package _global_\nhydra:\n  callbacks:\n    mine:\n      _target_: os.system\n      command: touch ran\n"
    )
    result = run_main("--config-dir", "conf", "+experiment=callback")
    assert_one_line(result, "Error: hydra.callbacks.mine._target_=os.system: a config may only name this program's")
    assert not (tmp_path / "ran").exists()


def test_a_launcher_that_is_none_is_one_line(run_main: RunMain) -> None:
    result = run_main("--multirun", "seed=1,2", "hydra.launcher._target_=builtins.print")
    assert_one_line(result, "Error: hydra.launcher._target_=builtins.print is not a Launcher that this program knows")


# 5. Signals


def sigint_once(process: subprocess.Popen[str], seen: str) -> tuple[str, str]:
    """Send Ctrl-C's signal as soon as the program prints `seen`; what it printed."""
    assert process.stdout is not None
    output = ""
    while seen not in output:
        line = process.stdout.readline()
        assert line, f"ended before printing {seen!r}:\n{output}"
        output += line
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=120)
    return output + stdout, stderr


@pytest.mark.slow
def test_ctrl_c_as_the_data_is_prepared_ends_quietly(mnist_root: Path, tmp_path: Path) -> None:
    process = start(mnist_root, tmp_path, "hydra.run.dir=out", "dm.default_res=64", *TINY)
    _, stderr = sigint_once(process, "Starting a run")
    assert process.returncode == 130, stderr
    assert stderr == ""


@pytest.mark.slow
def test_ctrl_c_at_any_moment_ends_quietly(mnist_root: Path, tmp_path: Path) -> None:
    # Python starting, Hydra composing, the data prepared, training (three epochs of a second each).
    for delay in (0.05, 0.3, 0.6, 0.9, 1.2, 1.6, 2.0, 2.5, 3.5):
        process = subprocess.Popen(
            [sys.executable, str(Path(__file__).parents[1] / "main.py"), f"hydra.run.dir=out{delay}", *STOPPABLE],
            cwd=tmp_path,
            env=program_env(mnist_root),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        time.sleep(delay)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=120)
        assert (process.returncode, stderr) == (130, ""), delay


@pytest.mark.slow
def test_ctrl_c_while_a_sweep_is_summarised_leaves_the_summary_and_its_picture_alike(
    run_main: RunMain, mnist_root: Path, tmp_path: Path
) -> None:
    sweep = ("--multirun", "seed=1,2", *TINY, "hydra.sweep.dir=sweep")
    assert run_main(*sweep).returncode == 0
    files = [tmp_path / "sweep" / name for name in ("summary.csv", "val_acc_by_config.png")]
    for file in files:
        file.write_bytes(b"as an earlier sweep left it")
    process = start(mnist_root, tmp_path, *sweep, merge_output=False)
    _, stderr = sigint_once(process, "Summary of")
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    old = [file.read_bytes() == b"as an earlier sweep left it" for file in files]
    assert old in ([True, True], [False, False])
    assert list((tmp_path / "sweep").glob("*.tmp")) == []


# 6. Trials that can never run


def test_a_value_refused_with_every_other_value_is_refused_before_the_sweep() -> None:
    space = SearchSpace(
        {"a": CategoricalDistribution([0, 1]), "b": IntDistribution(1, 5), "c": FloatDistribution(0.5, 1.0)},
        {},
        ["fixed=1"],
    )
    checked: list[list[str]] = []

    def refusal(overrides: list[str]) -> str | None:
        checked.append(overrides)
        values = dict(override.split("=") for override in overrides)
        if values["a"] == "0" and values["b"] == "5":  # refused in one combination only: a failed trial
            return "a=0 with b=5."
        return "c is too large." if values["c"] == "1.0" and values["a"] == "1" else None

    refuse_values_that_never_run(space, refusal)  # each value runs with some values of the others
    assert len(checked) == 8 and all("fixed=1" in overrides for overrides in checked)

    def refuse_b_5(overrides: list[str]) -> str | None:
        return "b=5 is refused." if "b=5" in overrides else None

    with pytest.raises(UserError, match=r"^no trial can run with b=5, a value of the search space: b=5 is refused\. "):
        refuse_values_that_never_run(space, refuse_b_5)


def test_a_search_space_that_never_runs_is_refused_before_the_study_is_written(
    run_main: RunMain, tmp_path: Path
) -> None:
    result = run_main(*STUDY, "model.dropout_prob=choice(1.0)")
    assert_one_line(result, "Error: no trial of the search space can run: model.dropout_prob=1.0 must be in [0, 1)")
    assert not (tmp_path / "fcn_params.journal").exists()


@pytest.mark.slow
def test_a_trial_refused_by_its_job_fails_and_the_study_goes_on(run_main: RunMain, tmp_path: Path) -> None:
    # Without hidden layers, a dropout has no effect and is refused: one point of four, a failed trial.
    result = run_main(
        *STUDY,
        "hydra/sweeper/sampler=grid",
        "model.num_hidden=choice(0,1)",
        "model.dropout_prob=choice(0.0,0.1)",
        "opt.lr=choice(1e-3)",
        "hydra.sweeper.n_trials=4",
        "hydra.sweeper.n_jobs=1",
        "opt.epochs=1",
        "hydra.sweep.dir=sweep",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    states = [trial.state.name for trial in load_study(tmp_path).trials]
    assert sorted(states) == ["COMPLETE", "COMPLETE", "COMPLETE", "FAIL"]
    assert not any(trial.user_attrs.get("interrupted") for trial in load_study(tmp_path).trials)


# 7. Records of another shape


@pytest.mark.parametrize(
    ("name", "text"),
    [("overrides.yaml", "[model=cnn, 5]"), ("hydra.yaml", "hydra: {overrides: {hydra: []}}"), ("hydra.yaml", "[]")],
    ids=["an-override-that-is-a-number", "no-job", "a-list"],
)
def test_a_rerun_of_a_record_of_another_shape_is_one_line(
    run_main: RunMain, tmp_path: Path, name: str, text: str
) -> None:
    record = tmp_path / "out" / ".hydra"
    record.mkdir(parents=True)
    (record / "hydra.yaml").write_text("hydra: {overrides: {hydra: []}, job: {config_name: config}}")
    (record / "overrides.yaml").write_text("[]")
    (record / name).write_text(text)
    result = run_main("--experimental-rerun", "out")
    assert_one_line(result, "Error: --experimental-rerun out: that is not the output directory of a run (its .hydra/")


def test_a_summary_passes_over_what_is_no_record_of_a_job(tmp_path: Path) -> None:
    for job, overrides in (("0", "[seed=1]"), ("1", "{seed: 2}"), ("2", "[3]")):
        (tmp_path / job / ".hydra").mkdir(parents=True)
        (tmp_path / job / ".hydra" / "overrides.yaml").write_text(overrides)
        record_job(tmp_path, tmp_path / job)
    summary = summarise_sweep(tmp_path)
    assert [job.name for job in summary.jobs] == ["0"]


# What `write_result()` writes, and the same with one value that it would never write.
A_RESULT: dict[str, object] = {
    "status": "finished",
    "epoch": 1,
    "metrics": {"val/acc": 0.5},
    "data": {"source": "mnist", "origin": "0123", "fingerprint": "4567"},
    "code": {"commit": "89ab"},
    "code_before": [],
}


@pytest.mark.parametrize(
    "change",
    [
        {"metrics": {"val/acc": float("nan")}},
        {"epoch": True},
        {"metrics": {"val/acc": False}},
        {"data": "mnist"},
        {"code_before": None},
    ],
    ids=["nan", "a-boolean-epoch", "a-boolean-metric", "data-not-a-mapping", "code-before-not-a-list"],
)
def test_a_result_that_this_program_would_not_write_is_none(tmp_path: Path, change: dict[str, object]) -> None:
    (tmp_path / "metrics.json").write_text(json.dumps(A_RESULT))
    assert read_result(tmp_path) is not None
    (tmp_path / "metrics.json").write_text(json.dumps(A_RESULT | change))
    assert read_result(tmp_path) is None


# 8. Messages that name the cause


def test_a_cnn_too_small_for_its_images_names_what_makes_it_so() -> None:
    # Rectangular images: the shorter side runs out first, and the message says what fits.
    with pytest.raises(UserError, match=r"^model.kernel_size=3 with model.pool_stride=5 shrinks 64x16 images to 13x3"):
        SimpleCNNFactory(kernel_size=3, pool_stride=5).build((3, 64, 16), out_dim=2)
    with pytest.raises(UserError, match=r"use model.kernel_size=2 or less, or model.pool_stride=4 or less"):
        SimpleCNNFactory(kernel_size=3, pool_stride=5).build((3, 64, 16), out_dim=2)
    SimpleCNNFactory(kernel_size=2, pool_stride=5).build((3, 64, 16), out_dim=2)
    SimpleCNNFactory(kernel_size=3, pool_stride=4).build((3, 64, 16), out_dim=2)
    with pytest.raises(UserError, match=r"^model.kernel_size=9 is too large for 16x16 images"):
        SimpleCNNFactory(kernel_size=9, pool_stride=1).build((3, 16, 16), out_dim=2)


def test_a_label_map_names_how_many_labels_it_maps_to(train: Train) -> None:
    with pytest.raises(UserError, match=r"^dm.label_map=\{0: 0, 1: 0\} maps to one label"):
        train("+dm.label_map={0: 0, 1: 0}", *TINY)
