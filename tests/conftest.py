"""Shared fixtures: small MNIST files in the real IDX format (and a copy of real MNIST), and two ways to run
the program: `run_main` runs `main.py` as a user does, in a subprocess; `train` calls `run()` in this
process, on a config composed by Hydra's compose API, for tests where a subprocess adds nothing but time.
For the tests on the local SLURM cluster, `slurm_env` and `sweep_dir`."""

import os

# The tests run in a worker per core (`make test`), and each may start processes that train at once: PyTorch's
# OpenMP threads, which spin while they wait for work, would take the cores from the other processes' threads
# (twice the CPU time). Passive, they sleep instead; the numbers are the same. Read as OpenMP loads, with torch.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from src.config import register_configs
from src.datasets.digits import MNIST_FILES, synthetic_digits
from src.run import run
from tests.celeba_folder import write_celeba
from tests.helpers import REAL_MNIST, REPO, SWEEP_DIR, RunMain, Train, program_env, write_idx
from tests.slurm_cluster import cluster_env

register_configs()  # once per process, as main.py does: the ConfigStore is a process-wide singleton


@pytest.fixture(scope="session")
def mnist_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data root holding a small MNIST (1,200 training and 300 test digits) as torchvision expects,
    and a tiny CelebA (48 faces), so that every README command finds its data."""
    root = tmp_path_factory.mktemp("data")
    write_celeba(root)
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    generator = torch.Generator().manual_seed(0)
    train_images, train_labels = synthetic_digits(1200, generator=generator)
    test_images, test_labels = synthetic_digits(300, generator=generator)
    arrays = (train_images, train_labels.to(torch.uint8), test_images, test_labels.to(torch.uint8))
    for name, array in zip(MNIST_FILES, arrays, strict=True):
        write_idx(raw / name, array)
    return root


@pytest.fixture(scope="session")
def real_mnist_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data root holding a copy of real MNIST, from the folder `shared/data/` beside the checkout (on every
    development machine, and in CI); the test is skipped, saying why, where there is none."""
    if not REAL_MNIST.is_dir():
        pytest.skip(f"no real MNIST in {REAL_MNIST}: the documents' figures, measured on it, are not compared")
    root = tmp_path_factory.mktemp("real_data")
    shutil.copytree(REAL_MNIST, root / "MNIST" / "raw")
    return root


@pytest.fixture
def run_main(mnist_root: Path, tmp_path: Path) -> RunMain:
    """Run `python main.py ARGS` in `tmp_path`, on the small MNIST unless `env` says otherwise; `program`:
    another main.py (see `program_trusting`)."""

    def run(
        *args: str, env: dict[str, str] | None = None, timeout: float = 300, program: Path = REPO / "main.py"
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, str(program), *args],
            cwd=tmp_path,
            env=program_env(mnist_root, env),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    return run


@pytest.fixture
def train(mnist_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Train:
    """`train(*overrides, output_dir=...)`: compose the config as `python main.py OVERRIDES` would and call
    `run()` with it, as a library user does; on the small MNIST, in `tmp_path` (output: `tmp_path/out`)."""
    monkeypatch.setenv("HYDRA_EXAMPLE_DATA", str(mnist_root))
    monkeypatch.chdir(tmp_path)

    def train(*overrides: str, output_dir: Path = tmp_path / "out") -> float:
        with initialize_config_dir(config_dir=str(REPO / "conf")):
            config = compose(config_name="config", overrides=list(overrides))
        return run(config, output_dir=output_dir)

    return train


@pytest.fixture(scope="module")
def slurm_env() -> dict[str, str]:
    """The environment that makes `sbatch` & co. (and submitit) find the test cluster."""
    env = cluster_env()
    if env is None:
        reason = "no SLURM cluster answers; start one (as root) with `scripts/slurm-cluster.sh start`"
        # CI starts the cluster (.ci/run): there, a skip would hide that these tests never ran.
        if os.environ.get("CI"):
            pytest.fail(f"CI is set, but {reason}")
        pytest.skip(reason)
    # The jobs unpickle main.py's function, which imports `src`: they find it on their working
    # directory when you run from the repository's root, as the README does; `run_main` does not.
    python_path = [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]
    return env | {"PYTHONPATH": os.pathsep.join(python_path)}


@pytest.fixture
def sweep_dir(tmp_path: Path, slurm_env: dict[str, str]) -> Iterator[Path]:
    """The test's sweep directory; jobs that a failed test left in the queue are cancelled."""
    yield tmp_path / SWEEP_DIR
    # `.submitit/<job id>`, or `.submitit/<array job id>_<task>` for the jobs of an array.
    job_ids = {folder.name.split("_")[0] for folder in (tmp_path / SWEEP_DIR / ".submitit").glob("[0-9]*")}
    if job_ids:
        subprocess.run(["scancel", *sorted(job_ids)], env=os.environ | slurm_env, timeout=10, check=False)
