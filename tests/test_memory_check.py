"""The memory check of a distributed run: the processes on a node share one copy of the data (the memory-mapped
cache), and each holds its own weights. Sized against this machine's memory as it is, so that the same runs
fit or not on any machine."""

from pathlib import Path

import pytest
import torch

from src.checks.memory import FLOAT_BYTES, available_bytes, check_data_and_weights_fit
from src.common.errors import UserError
from src.datasets.celeba import CelebADataModule
from src.model import FcnFactory
from src.training.distributed import World

CPU = torch.device("cpu")
RES = 64
INPUT = 3 * RES * RES


def celeba_of(root: Path, data_bytes: float) -> CelebADataModule:
    """CelebA whose prepared data would take about `data_bytes`: the memory check reads only the image count
    of the attribute file, so that line is all there is."""
    (root / "celeba").mkdir(parents=True)
    (root / "celeba" / "list_attr_celeba.txt").write_text(f"{int(data_bytes) // (INPUT + 41)}\n")
    return CelebADataModule(root=root, download=False, default_res=RES)


def model_of(weights_bytes: float) -> FcnFactory:
    """A network whose weights and gradients take about `weights_bytes` (one hidden layer, as wide as needed)."""
    return FcnFactory(hidden_dim=int(weights_bytes / (2 * FLOAT_BYTES * INPUT)))


def processes(count: int) -> World:
    """This process as rank 0 of `count` on one node (no process group is started: the check needs none)."""
    return World(rank=0, size=count, local_rank=0, local_size=count)


@pytest.fixture
def available() -> int:
    return available_bytes(CPU)


def test_the_data_counts_once_per_node_and_the_weights_once_per_process(tmp_path: Path, available: int) -> None:
    # Data of 40% of the memory, and weights of 20% per process: 40 + 2 x 20 = 80% fits; counting the data
    # per process (2 x 40 + 2 x 20 = 120%) would refuse it.
    celeba, model = celeba_of(tmp_path, 0.4 * available), model_of(0.2 * available)
    check_data_and_weights_fit(celeba, model, CPU, processes(2))
    # Four processes: 40 + 4 x 20 = 120%.
    with pytest.raises(UserError, match=r"^4 processes on this node need at least (\d+\.\d) GB: ") as error:
        check_data_and_weights_fit(celeba, model, CPU, processes(4))
    needed = float(error.value.args[0].split(" GB")[0].rsplit(" ", 1)[1]) * 1e9
    assert 1.1 * available < needed < 1.3 * available
    assert "use fewer processes per node (hydra.launcher.tasks_per_node)" in str(error.value)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA, which this machine lacks (docs/gpu.md)")
def test_processes_with_gpus_of_their_own_do_not_share_them(tmp_path: Path) -> None:
    gpu = torch.device("cuda", 0)
    memory = available_bytes(gpu)
    # Four processes, each with its GPU: each GPU holds the data and one process's weights, 60% of it.
    check_data_and_weights_fit(celeba_of(tmp_path, 0.4 * memory), model_of(0.2 * memory), gpu, processes(4))
