"""W&B: offline runs record what was logged; online failures are one clear line."""

from pathlib import Path

import pytest

from src.wandb_logging import WandbCfg, WandbMode
from tests.helpers import RunMain, metrics_record
from tests.wandb_records import logged


@pytest.mark.slow
def test_offline_run_logs_config_and_metrics_of_every_job(run_main: RunMain, tmp_path: Path) -> None:
    args = ("--multirun", "seed=1,2", "opt.epochs=2", "model.hidden_dim=32", "wandb.mode=offline", "wandb.dir=wb")
    args += ("hydra.sweep.dir=sweep",)
    result = run_main(*args)
    assert result.returncode == 0, result.stderr
    run_files = sorted((tmp_path / "wb" / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(run_files) == 2  # each job of the multirun is its own W&B run
    seeds: set[int] = set()
    for run_file in run_files:
        config, history = logged(run_file)
        seeds.add(config["seed"])
        assert config["data"]["source"] == "mnist"
        # What the results belong to, as metrics.json records it.
        record = metrics_record(tmp_path / "sweep" / str(config["seed"] - 1))
        assert (config["data"], config["code"]) == (record["data"], record["code"])
        assert config["opt"]["epochs"] == 2
        epochs = [row for row in history if "epoch" in row]
        assert [row["epoch"] for row in epochs] == [1, 2]
        assert all(0 <= row["val/acc"] <= 1 for row in epochs)
        assert any("test/worst_group_acc" in row for row in history)
    assert seeds == {1, 2}


@pytest.mark.slow
def test_online_without_an_api_key_is_one_clear_line(run_main: RunMain, tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path), "WANDB_API_KEY": "", "WANDB_CONFIG_DIR": str(tmp_path / "wandb-config")}
    result = run_main("wandb.mode=online", "opt.epochs=1", "model.hidden_dim=16", env=env)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("Error: W&B cannot start in online mode: No API key")
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_online_with_an_unreachable_server_is_one_clear_line(run_main: RunMain, tmp_path: Path) -> None:
    env = {
        "HOME": str(tmp_path),
        "WANDB_API_KEY": "0" * 40,
        "WANDB_BASE_URL": "http://127.0.0.1:9",  # the discard port: nothing listens there
        "WANDB_INIT_TIMEOUT": "3",
    }
    result = run_main("wandb.mode=online", "opt.epochs=1", "model.hidden_dim=16", env=env)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("Error: W&B could not reach its server within 3 s")
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("mode", "environment", "saved", "expected"),
    [
        (None, None, None, WandbMode.DISABLED),  # nothing said: no W&B
        (None, "offline", None, WandbMode.OFFLINE),  # WANDB_MODE
        (None, "dryrun", None, WandbMode.OFFLINE),  # its old name
        (None, None, "offline", WandbMode.OFFLINE),  # `wandb offline`, run in the project's folder
        (None, "online", "offline", WandbMode.ONLINE),  # WANDB_MODE before `wandb offline`, as in W&B
        (WandbMode.DISABLED, "offline", "offline", WandbMode.DISABLED),  # the config before both
        (WandbMode.ONLINE, "disabled", None, WandbMode.ONLINE),
    ],
)
def test_a_mode_in_the_config_wins_else_wandbs_own_settings_decide(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    *,
    mode: WandbMode | None,
    environment: str | None,
    saved: str | None,
    expected: WandbMode,
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "global"))  # not this machine's own settings
    monkeypatch.delenv("WANDB_MODE", raising=False)
    if environment is not None:
        monkeypatch.setenv("WANDB_MODE", environment)
    if saved is not None:  # what `wandb offline` writes
        (tmp_path / "wandb").mkdir()
        (tmp_path / "wandb" / "settings").write_text(f"[default]\nmode = {saved}\n")
    assert WandbCfg(mode=mode).resolved_mode() is expected


@pytest.mark.slow
def test_wandb_mode_from_the_environment_logs_offline(run_main: RunMain, tmp_path: Path) -> None:
    result = run_main("opt.epochs=1", "model.hidden_dim=16", "wandb.dir=wb", env={"WANDB_MODE": "offline"})
    assert result.returncode == 0, result.stderr
    assert len(list((tmp_path / "wb" / "wandb").glob("offline-run-*/run-*.wandb"))) == 1
