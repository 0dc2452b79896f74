"""The cache of prepared data under stress: processes that build it at the same time, and damaged files."""

import gzip
import logging
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from src.datasets import cache
from src.datasets.digits import MNIST_FILES
from tests.helpers import REPO

PROCESSES = 3
# Each process waits until all have started (so that they ask for the cache at the same moment), then
# asks for it; the build is slow, so that the others arrive while it runs.
CONTENDER = """
import os
import sys
import time
from pathlib import Path

import torch

from src.datasets.cache import load_or_build

path, rendezvous, processes = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
(rendezvous / f"ready-{os.getpid()}").touch()
while len(list(rendezvous.glob("ready-*"))) < processes:
    time.sleep(0.01)


def build():
    (rendezvous / f"built-{os.getpid()}").touch()
    time.sleep(1)
    return {"x": torch.arange(1_000_000)}


print(int(load_or_build(path, build)["x"].sum()))
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
    path = tmp_path / "cache" / "data.pt"
    rendezvous = tmp_path / "rendezvous"
    rendezvous.mkdir()
    outputs = at_once(CONTENDER, *[[str(path), str(rendezvous), str(PROCESSES)]] * PROCESSES)
    assert [stdout.strip() for stdout, _ in outputs] == [str(sum(range(1_000_000)))] * PROCESSES
    assert len(list(rendezvous.glob("built-*"))) == 1  # the others waited for it, and read it
    assert sorted(path.name for path in path.parent.iterdir()) == ["data.pt", "data.pt.lock"]  # no temporary file


@pytest.mark.parametrize("keep", [0, 100, 0.5, -1], ids=["empty", "header-only", "half", "last-byte-missing"])
def test_a_truncated_cache_is_rebuilt_with_a_warning_never_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, keep: float
) -> None:
    path = tmp_path / "data.pt"
    builds: list[int] = []

    def build() -> dict[str, torch.Tensor]:
        builds.append(1)
        return {"x": torch.arange(100_000), "y": torch.ones(3, 4)}

    def load() -> dict[str, torch.Tensor]:
        monkeypatch.setattr(cache, "_last_loaded", None)  # as in a new process: no tensors kept in memory
        return cache.load_or_build(path, build)

    expected = load()
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
    assert sorted(path.suffix for path in (tmp_path / "data" / "cache").iterdir()) == [".lock", ".pt"]
    assert not list(raw.glob("*.tmp"))
