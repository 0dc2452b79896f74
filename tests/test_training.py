"""End-to-end runs of `main.py`: real training on small generated data."""

import json
import re
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from src.cmnist import PALETTE, CMNISTDataModule
from src.errors import UserError
from src.optimisation import OptimisationCfg
from src.training import TrainingState, fit
from tests.conftest import RunMain


def test_default_run_learns_the_digits(run_main: RunMain, tmp_path: Path) -> None:
    result = run_main("hydra.run.dir=out")
    assert result.returncode == 0, result.stderr
    assert "Starting a run with seed 42 and GPU 0." in result.stdout
    record = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert record["status"] == "finished"
    assert record["data_source"] == "mnist"
    assert record["metrics"]["val/acc"] > 0.5  # ten classes: chance is 0.1
    assert f"Final val/acc={record['metrics']['val/acc']:.4f}" in result.stdout


def test_the_same_seed_gives_the_same_metrics_bit_for_bit(run_main: RunMain, tmp_path: Path) -> None:
    runs = {"a": "seed=7", "b": "seed=7", "c": "seed=8"}
    for out, seed in runs.items():
        result = run_main(seed, "opt.epochs=1", "model.hidden_dim=64", "dm.correlation=0.5", f"hydra.run.dir={out}")
        assert result.returncode == 0, result.stderr
    metrics = {out: json.loads((tmp_path / out / "metrics.json").read_text())["metrics"] for out in runs}
    assert metrics["a"] == metrics["b"]
    assert metrics["a"] != metrics["c"]


def test_without_mnist_the_run_uses_synthetic_digits_and_says_so(run_main: RunMain, tmp_path: Path) -> None:
    args = ("dm.root=empty", "dm.download=false", "model.hidden_dim=32", "opt.epochs=1", "hydra.run.dir=out")
    result = run_main(*args)
    assert result.returncode == 0, result.stderr
    assert "WARNING: no MNIST files in empty/MNIST/raw and dm.download=false; using SYNTHETIC digits" in result.stdout
    record = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert record["data_source"] == "synthetic"
    assert record["metrics"]["test/acc"] > 0.5


def test_synthetic_digits_can_be_forced(run_main: RunMain, tmp_path: Path) -> None:
    result = run_main("dm.digits=SYNTHETIC", "model=cnn", "opt.epochs=1", "opt.lr=1e-3", "hydra.run.dir=out")
    assert result.returncode == 0, result.stderr
    assert "WARNING" not in result.stdout
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["data_source"] == "synthetic"


def test_label_map_colors_and_resolution_shape_the_data(run_main: RunMain, tmp_path: Path) -> None:
    args = ("+dm.label_map={3: 0, 8: 1}", "dm.colors=[1, 4]", "dm.num_colors=5", "dm.default_res=20", "model=cnn")
    result = run_main(
        *args, "model.kernel_size=3", "opt.lr=3e-3", "opt.batch_size=16", "opt.epochs=6", "hydra.run.dir=out"
    )
    assert result.returncode == 0, result.stderr
    assert "Conv2d(3, 6, kernel_size=(3, 3)" in result.stdout
    assert "Linear(in_features=144, out_features=120" in result.stdout  # 16 channels x 3 x 3 from 20x20
    assert "Linear(in_features=84, out_features=2" in result.stdout  # two classes
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())["metrics"]
    assert {name for name in metrics if name.startswith("val/acc_")} == {"val/acc_green", "val/acc_orange"}
    assert metrics["val/acc"] > 0.6  # 3 against 8: chance is 0.5


def test_a_colour_shortcut_shows_in_worst_group_accuracy(run_main: RunMain, tmp_path: Path) -> None:
    # Every training digit wears its label's colour: a model can learn the colour instead of the
    # digit, and validation, where colours are random, exposes it.
    args = ("dm.correlation=1.0", "model=single_linear_layer", "opt.lr=1e-2", "opt.epochs=1")
    shortcut = run_main(*args, "hydra.run.dir=shortcut")
    honest = run_main(*args, "dm.correlation=0.0", "hydra.run.dir=honest")
    assert shortcut.returncode == honest.returncode == 0, shortcut.stderr + honest.stderr
    shortcut_metrics, honest_metrics = (
        json.loads((tmp_path / out / "metrics.json").read_text())["metrics"] for out in ("shortcut", "honest")
    )
    assert shortcut_metrics["val/worst_group_acc"] < honest_metrics["val/worst_group_acc"]


def test_mixed_precision_trains(run_main: RunMain, tmp_path: Path) -> None:
    result = run_main("opt.mixed_precision=true", "model.hidden_dim=64", "opt.lr=1e-3", "hydra.run.dir=out")
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["metrics"]["val/acc"] > 0.5


def test_cmnist_keeps_its_digits_grey_and_colours_each_batch(mnist_root: Path) -> None:
    data = CMNISTDataModule(root=mnist_root, colors=[1, 4], num_colors=5).build(seed=0)
    train = data.train
    assert train.images.dtype == torch.uint8
    assert train.images.shape[1] == 1  # a third of the memory of colour images
    assert data.input_shape == (3, 28, 28)  # what the model sees
    batch = train.batch(torch.arange(8))
    assert batch.shape == (8, 3, 28, 28)
    for image, grey, group in zip(batch, train.images[:8], train.groups[:8], strict=True):
        color = PALETTE[data.group_names[int(group)]]  # green or orange
        for channel, value in zip(image, color, strict=True):
            torch.testing.assert_close(channel, grey[0].float() / 255 * value / 255)


def test_the_data_moves_to_the_device_once_not_for_each_batch(
    mnist_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # On a GPU every `Tensor.to(device)` in the loop would be a copy from the host; on the CPU
    # (no GPU here) the calls are counted instead: as many for 4 batches an epoch as for 40.
    data = CMNISTDataModule(root=mnist_root).build(seed=0)
    moves: list[int] = []
    original_to = torch.Tensor.to

    def counting_to(tensor: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        moves[-1] += 1
        return original_to(tensor, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "to", counting_to)
    for batch_size in (256, 25):  # 960 training images: 4 batches, then 39
        moves.append(0)
        model = nn.Linear(3 * 28 * 28, 10)
        state = TrainingState(
            model=nn.Sequential(nn.Flatten(), model),
            optimizer=torch.optim.SGD(model.parameters()),
            generator=torch.Generator().manual_seed(0),
        )
        opt = OptimisationCfg(epochs=1, batch_size=batch_size)
        fit(state, data, opt=opt, on_epoch_end=lambda _state: None, stop_requested=lambda: False)
    assert moves[0] == moves[1]


@pytest.mark.parametrize("optimizer_cls", ["torch.optim.AdamW", "torch.optim.SGD", "torch.optim.Adagrad"])
def test_the_optimiser_is_fused_where_it_has_a_fused_implementation(optimizer_cls: str) -> None:
    optimizer = OptimisationCfg(optimizer_cls=optimizer_cls).build(nn.Linear(4, 2).parameters())
    assert optimizer.param_groups[0]["fused"] is True


def test_an_optimiser_without_a_fused_implementation_is_built_as_pytorch_chooses() -> None:
    optimizer = OptimisationCfg(optimizer_cls="torch.optim.RMSprop").build(nn.Linear(4, 2).parameters())
    assert "fused" not in optimizer.param_groups[0]
    assert optimizer.param_groups[0]["foreach"] is None  # PyTorch's choice: foreach on GPUs, else standard


@pytest.mark.parametrize("choice", [{"foreach": True}, {"fused": False}, {"foreach": False}])
def test_the_users_choice_of_implementation_wins(choice: dict[str, bool]) -> None:
    opt = OptimisationCfg(optimizer_kwargs=choice)
    group = opt.build(nn.Linear(4, 2).parameters()).param_groups[0]
    assert {key: group[key] for key in choice} == choice
    assert not group["fused"]


def test_settings_that_exclude_the_fused_implementation_get_the_standard_one() -> None:
    optimizer = OptimisationCfg(optimizer_kwargs={"differentiable": True}).build(nn.Linear(4, 2).parameters())
    assert not optimizer.param_groups[0]["fused"]


def test_a_fused_implementation_that_cannot_step_is_one_clear_error() -> None:
    opt = OptimisationCfg(optimizer_kwargs={"fused": True, "differentiable": True})
    with pytest.raises(UserError, match=re.escape("cannot be fused here (`fused` does not support `differentiable`)")):
        opt.build(nn.Linear(4, 2).parameters())


def test_a_saved_optimiser_continues_in_the_implementation_chosen_where_it_continues() -> None:
    # As a run saved on the CPU with fused Adagrad continues on a GPU, where Adagrad has no fused kernel.
    model = nn.Linear(4, 2)
    model(torch.ones(1, 4)).sum().backward()
    saved = torch.optim.Adagrad(model.parameters(), foreach=True)
    saved.step()  # pyright: ignore[reportUnknownMemberType]
    optimizer = OptimisationCfg(optimizer_cls="torch.optim.Adagrad").build(model.parameters())
    optimizer.load_state_dict(saved.state_dict())
    assert optimizer.param_groups[0]["fused"] is True
    assert optimizer.param_groups[0]["foreach"] is None
    optimizer.step()  # pyright: ignore[reportUnknownMemberType] (fused, on the state the foreach one saved)
    assert optimizer.state[model.weight]["sum"].shape == model.weight.shape
