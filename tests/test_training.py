"""Training on small generated data, in this process (`train` composes the config as main.py would)."""

import json
import logging
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from src.checks.memory import check_batch_fits
from src.common.errors import RunFailedError, UserError
from src.datasets.cmnist import PALETTE, CMNISTDataModule
from src.optimisation import OptimisationCfg
from src.training.loop import TrainingState, fit
from tests.helpers import Train


def metrics_record(output_dir: Path) -> dict[str, Any]:
    return json.loads((output_dir / "metrics.json").read_text())


@pytest.fixture(scope="module")
def no_mnist_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data root without MNIST, shared by the tests of synthetic digits: the first one to run makes
    them (seconds), the others read them from its cache."""
    return tmp_path_factory.mktemp("no_mnist")


def test_default_run_learns_the_digits(train: Train, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO):
        val_acc = train()
    assert "Starting a run with seed 42 and GPU 0." in caplog.messages
    record = metrics_record(tmp_path / "out")
    assert record["status"] == "finished"
    assert record["data"]["source"] == "mnist"
    assert record["metrics"]["val/acc"] == val_acc  # what a sweeper receives is what was recorded
    assert val_acc > 0.5  # ten classes: chance is 0.1
    assert f"Final val/acc={val_acc:.4f} (all metrics: out/metrics.json)" in caplog.messages


def test_the_same_seed_gives_the_same_metrics_bit_for_bit(train: Train, tmp_path: Path) -> None:
    runs = {"a": "seed=7", "b": "seed=7", "c": "seed=8"}
    for out, seed in runs.items():
        train(seed, "opt.epochs=1", "model.hidden_dim=64", "dm.correlation=0.5", output_dir=tmp_path / out)
    metrics = {out: metrics_record(tmp_path / out)["metrics"] for out in runs}
    assert metrics["a"] == metrics["b"]
    assert metrics["a"] != metrics["c"]


def test_without_mnist_the_run_uses_synthetic_digits_and_says_so(
    train: Train, tmp_path: Path, no_mnist_root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    train(f"dm.root={no_mnist_root}", "dm.download=false", "model.hidden_dim=32", "opt.epochs=1")
    (warning,) = [record for record in caplog.records if record.levelno == logging.WARNING]
    assert warning.getMessage().startswith(
        f"there are no MNIST files in {no_mnist_root}/MNIST/raw and dm.download=false; using SYNTHETIC digits"
    )
    record = metrics_record(tmp_path / "out")
    assert record["data"]["source"] == "synthetic"
    assert record["metrics"]["test/acc"] > 0.5


def test_synthetic_digits_can_be_forced(
    train: Train, tmp_path: Path, no_mnist_root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    train(f"dm.root={no_mnist_root}", "dm.digits=SYNTHETIC", "model.hidden_dim=16", "opt.epochs=1")
    assert not [record for record in caplog.records if record.levelno >= logging.WARNING]
    assert metrics_record(tmp_path / "out")["data"]["source"] == "synthetic"


def test_label_map_colors_and_resolution_shape_the_data(
    train: Train, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data_args = ("+dm.label_map={3: 0, 8: 1}", "dm.colors=[1, 4]", "dm.num_colors=5", "dm.default_res=20")
    with caplog.at_level(logging.INFO):
        train(*data_args, "model=cnn", "model.kernel_size=3", "opt.lr=3e-3", "opt.batch_size=16", "opt.epochs=6")
    assert "Conv2d(3, 6, kernel_size=(3, 3)" in caplog.text
    assert "Linear(in_features=144, out_features=120" in caplog.text  # 16 channels x 3 x 3 from 20x20
    assert "Linear(in_features=84, out_features=2" in caplog.text  # two classes
    metrics = metrics_record(tmp_path / "out")["metrics"]
    assert {name for name in metrics if name.startswith("val/acc_")} == {"val/acc_green", "val/acc_orange"}
    assert metrics["val/acc"] > 0.6  # 3 against 8: chance is 0.5


def test_a_colour_shortcut_shows_in_worst_group_accuracy(train: Train, tmp_path: Path) -> None:
    # Every training digit wears its label's colour: a model can learn the colour instead of the
    # digit, and validation, where colours are random, exposes it.
    args = ("model=single_linear_layer", "opt.lr=1e-2", "opt.epochs=1")
    train(*args, "dm.correlation=1.0", output_dir=tmp_path / "shortcut")
    train(*args, "dm.correlation=0.0", output_dir=tmp_path / "honest")
    shortcut, honest = (metrics_record(tmp_path / out)["metrics"] for out in ("shortcut", "honest"))
    assert shortcut["val/worst_group_acc"] < honest["val/worst_group_acc"]


def test_mixed_precision_trains(train: Train, tmp_path: Path) -> None:
    assert train("opt.mixed_precision=true", "model.hidden_dim=64", "opt.lr=1e-3") > 0.5


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


def test_a_checkpoint_is_only_continued_on_the_data_it_started_with(
    train: Train, tmp_path: Path, no_mnist_root: Path
) -> None:
    # A run on MNIST, continued where MNIST is missing (another dm.root, no download) would train on
    # synthetic digits from its second epoch; a dm.root that holds the same MNIST may change.
    train("model.hidden_dim=16", "opt.epochs=1")
    (tmp_path / "out" / "metrics.json").unlink()  # as if stopped after its checkpoint: it would continue
    before = (tmp_path / "out" / "checkpoint.pt").read_bytes()
    with pytest.raises(UserError) as error:
        train("model.hidden_dim=16", "opt.epochs=1", f"dm.root={no_mnist_root}", "dm.download=false")
    assert str(error.value) == (
        "out/checkpoint.pt was trained on mnist data, not synthetic: continue it on the data it started with "
        "(check dm.root and the files there), or choose another output directory."
    )
    assert (tmp_path / "out" / "checkpoint.pt").read_bytes() == before


def test_training_that_diverges_stops_at_the_step_and_leaves_the_last_checkpoint(mnist_root: Path) -> None:
    data = CMNISTDataModule(root=mnist_root).build(seed=0)
    torch.manual_seed(0)  # pyright: ignore[reportUnknownMemberType]
    linear = nn.Linear(3 * 28 * 28, 10)
    model = nn.Sequential(nn.Flatten(), linear)
    state = TrainingState(model=model, optimizer=torch.optim.SGD(model.parameters()), generator=torch.Generator())
    saved: list[int] = []

    def end_epoch(state: TrainingState) -> None:
        saved.append(state.epoch)  # where a run saves its checkpoint
        with torch.no_grad():
            linear.weight[0, 0] = float("inf")  # the next step's loss is not a number

    with pytest.raises(RunFailedError) as error:
        fit(state, data, opt=OptimisationCfg(epochs=3), on_epoch_end=end_epoch, stop_requested=lambda: False)
    assert str(error.value).startswith("the training loss became nan at epoch 2, step 1; training diverged")
    assert saved == [1]  # no checkpoint of the model that diverged


def test_run_as_a_library_creates_its_output_directory(train: Train, tmp_path: Path) -> None:
    output_dir = tmp_path / "not" / "yet" / "there"
    train("model.hidden_dim=8", "opt.epochs=1", output_dir=output_dir)
    assert metrics_record(output_dir)["status"] == "finished"


def test_a_batch_too_large_for_the_memory_is_refused_before_training() -> None:
    model = nn.Linear(10, 10)
    check_batch_fits(model, (1, 1, 10), batch_size=10, device=torch.device("cpu"), data_bytes=0)  # fits
    with pytest.raises(UserError, match=r"^training needs at least 400000\.0 GB .* a batch of 10000000000000\)"):
        check_batch_fits(model, (1, 1, 10), batch_size=10**13, device=torch.device("cpu"), data_bytes=0)
