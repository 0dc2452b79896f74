"""The cache of prepared data under stress: processes that build it at the same time, and damaged files."""

import gzip
import logging
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from src.data import Data
from src.datasets import cache, tensor_file
from src.datasets.cmnist import CMNISTDataModule, DigitSource
from src.datasets.digits import MNIST_FILES
from src.datasets.tensor_file import Empty
from tests.helpers import REPO

PROCESSES = 3
# Each process waits until all have started (so that they ask for the cache at the same moment), then
# asks for it; the build is slow, so that the others arrive while it runs.
CONTENDER = """
import logging
import os
import sys
import time
from pathlib import Path

import torch

logging.basicConfig(level=logging.INFO, format="%(message)s")

from src.datasets.cache import load_or_build

path, rendezvous, processes = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
(rendezvous / f"ready-{os.getpid()}").touch()
while len(list(rendezvous.glob("ready-*"))) < processes:
    time.sleep(0.01)


def build(empty):
    (rendezvous / f"built-{os.getpid()}").touch()
    time.sleep(1)
    return {"x": torch.arange(1_000_000)}


print(int(load_or_build(path, build).tensors["x"].sum()))
"""


def at_once(script: str, *arguments: list[str]) -> list[tuple[str, str]]:
    """Run `python -c script ARGUMENTS` for each list of arguments, all at the same time; each one's stdout
    and stderr, once all have exited 0."""
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", script, *args], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for args in arguments
    ]
    outputs = [process.communicate(timeout=120) for process in processes]
    assert [process.returncode for process in processes] == [0] * len(processes), outputs
    return outputs


@pytest.mark.slow
def test_processes_that_prepare_the_same_data_at_once_build_it_once_and_all_read_it_whole(tmp_path: Path) -> None:
    path = tmp_path / "cache" / "data.tensors"
    rendezvous = tmp_path / "rendezvous"
    rendezvous.mkdir()
    outputs = at_once(CONTENDER, *[[str(path), str(rendezvous), str(PROCESSES)]] * PROCESSES)
    assert [stdout.strip() for stdout, _ in outputs] == [str(sum(range(1_000_000)))] * PROCESSES
    assert len(list(rendezvous.glob("built-*"))) == 1
    # The others waited for it, said so, and read it.
    waiting = f"Another process is preparing the data for {path}; waiting for it."
    assert sum(waiting in stderr for _, stderr in outputs) == PROCESSES - 1
    assert sum(f"Read the prepared data from the cache {path}." in stderr for _, stderr in outputs) == PROCESSES - 1
    # No temporary file left.
    assert sorted(path.name for path in path.parent.iterdir()) == ["data.tensors", "data.tensors.lock"]


@pytest.mark.parametrize("keep", [0, 100, 0.5, -1], ids=["empty", "header-only", "half", "last-byte-missing"])
def test_a_truncated_cache_is_rebuilt_with_a_warning_never_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, keep: float
) -> None:
    path = tmp_path / "data.tensors"
    builds: list[int] = []

    def build(empty: Empty) -> dict[str, torch.Tensor]:
        builds.append(1)
        return {"x": torch.arange(100_000), "y": torch.ones(3, 4)}

    def load() -> dict[str, torch.Tensor]:
        monkeypatch.setattr(cache, "_last_loaded", None)  # as in a new process: no tensors kept in memory
        return cache.load_or_build(path, build).tensors

    expected = {name: tensor.clone() for name, tensor in load().items()}  # not the mapped file, damaged next
    data = path.read_bytes()
    path.write_bytes(data[: int(keep * len(data)) if isinstance(keep, float) else keep])
    with caplog.at_level(logging.WARNING):
        rebuilt = load()
    assert len(builds) == 2
    assert all(torch.equal(rebuilt[name], tensor) for name, tensor in expected.items())
    (warning,) = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert warning.startswith(f"the cache {path} is damaged (")
    assert warning.endswith("); preparing the data again.")
    # The rebuilt cache is whole again: read, not built.
    load()
    assert len(builds) == 2


def prepare_cmnist(root: Path, monkeypatch: pytest.MonkeyPatch, *, seed: int = 0) -> Data:
    """CMNIST from the MNIST files in `root`, as a new run prepares it: nothing kept in memory from before."""
    monkeypatch.setattr(cache, "_last_loaded", None)
    return CMNISTDataModule(root=root, digits=DigitSource.MNIST).build(seed=seed)


@pytest.fixture
def data_root(mnist_root: Path, tmp_path: Path) -> Path:
    """A data root of its own, holding a copy of the small MNIST: its cache is damaged by the test."""
    shutil.copytree(mnist_root / "MNIST", tmp_path / "data" / "MNIST")
    return tmp_path / "data"


def cache_file(root: Path) -> Path:
    [path] = (root / "cache").glob("*.tensors")
    return path


def overwrite(path: Path, at: int, data: bytes) -> None:
    """Write `data` into the file at byte `at`, in place, as a failing disk or a stray program would."""
    with path.open("r+b") as file:
        file.seek(at)
        file.write(data)


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.levelno >= logging.WARNING]


def test_bytes_overwritten_inside_the_cached_images_are_found_and_the_data_prepared_again(
    data_root: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    first = prepare_cmnist(data_root, monkeypatch)
    path, images = cache_file(data_root), first.train.images.numpy().tobytes()
    at = path.read_bytes().find(images)
    assert at >= 0
    # A fifth of the training images, from their middle on, overwritten by other bytes (of the same sizes).
    overwrite(path, at + len(images) // 2, torch.randint(256, (len(images) // 5,), dtype=torch.uint8).numpy().tobytes())
    with caplog.at_level(logging.WARNING):
        second = prepare_cmnist(data_root, monkeypatch)
    (warning,) = warnings_of(caplog)
    assert warning == (
        f"the cache {path} is damaged (bytes 0 to {len(images):,} of its train_images do not match their checksum); "
        "preparing the data again."
    )
    assert second.train.images.numpy().tobytes() == images
    assert second.fingerprint() == first.fingerprint()
    caplog.clear()
    prepare_cmnist(data_root, monkeypatch)  # the cache is whole again: read without a warning
    assert warnings_of(caplog) == []


def test_a_single_bit_flipped_in_a_label_is_found(
    data_root: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    first = prepare_cmnist(data_root, monkeypatch)
    path, labels = cache_file(data_root), first.test.labels.clone()
    at = path.read_bytes().find(labels.numpy().tobytes())
    overwrite(path, at, bytes([int(labels[0]) ^ 1]))  # the lowest bit of the first test label
    with caplog.at_level(logging.WARNING):
        second = prepare_cmnist(data_root, monkeypatch)
    assert "of its test_labels do not match their checksum" in warnings_of(caplog)[0]
    assert torch.equal(second.test.labels, labels)


def test_another_cache_in_the_place_of_one_is_not_taken_for_it(
    data_root: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Another kind of damage: a whole, valid cache file, but of other data (another seed's), under this name."""
    fingerprint = prepare_cmnist(data_root, monkeypatch, seed=0).fingerprint()
    path = cache_file(data_root)
    path.rename(data_root / "seed-0")  # its tensors stay mapped by this process, untouched
    other = prepare_cmnist(data_root, monkeypatch, seed=1)
    cache_file(data_root).rename(path)
    with caplog.at_level(logging.WARNING):
        again = prepare_cmnist(data_root, monkeypatch, seed=0)
    (warning,) = warnings_of(caplog)
    assert warning.startswith(f"the cache {path} is damaged (it holds the data of another cache, cmnist-mnist-")
    assert again.fingerprint() == fingerprint != other.fingerprint()


def test_the_fingerprint_of_cached_data_comes_with_the_cache_without_reading_the_images(
    data_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = prepare_cmnist(data_root, monkeypatch)
    # Images without contents (on the meta device, only their shapes exist): reading them would fail.
    splits = {name: getattr(data, name) for name in ("train", "val", "test")}
    shapes_only = {name: replace(split, images=split.images.to("meta")) for name, split in splits.items()}
    assert replace(data, **shapes_only).fingerprint() == data.fingerprint()
    # The fingerprint stored with the cache is that of its tensors, computed again.
    tensors, stored = tensor_file.read(cache_file(data_root))
    assert stored == data.prepared_fingerprint == tensor_file.fingerprint(tensors)


# Each process waits for the others, then prepares CMNIST from a data root that holds only MNIST's archives.
FIRST_RUN = """
import sys
import time
from pathlib import Path

from src.datasets.cmnist import CMNISTDataModule

root, rendezvous, processes = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
(rendezvous / sys.argv[4]).touch()
while len(list(rendezvous.iterdir())) < processes:
    time.sleep(0.01)
print(len(CMNISTDataModule(root=root).build(seed=0).train))
"""


@pytest.mark.slow
def test_first_runs_at_once_on_mnist_archives_extract_them_once_and_build_one_cache(
    mnist_root: Path, tmp_path: Path
) -> None:
    raw = tmp_path / "data" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in MNIST_FILES:  # as torchvision's download leaves them, before extracting
        (raw / f"{name}.gz").write_bytes(gzip.compress((mnist_root / "MNIST" / "raw" / name).read_bytes()))
    rendezvous = tmp_path / "rendezvous"
    rendezvous.mkdir()
    data = str(tmp_path / "data")
    outputs = at_once(FIRST_RUN, *[[data, str(rendezvous), str(PROCESSES), str(number)] for number in range(PROCESSES)])
    assert len({stdout for stdout, _ in outputs}) == 1
    for name in MNIST_FILES:
        assert (raw / name).read_bytes() == (mnist_root / "MNIST" / "raw" / name).read_bytes()
    # One cache: the files were extracted once, so all runs saw the same files (sizes and times name the cache).
    assert sorted(path.suffix for path in (tmp_path / "data" / "cache").iterdir()) == [".lock", ".tensors"]
    assert not list(raw.glob("*.tmp"))
