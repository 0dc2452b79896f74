"""One run trained by two processes (data parallel): with submitit's local launcher, and on the local SLURM
cluster (tests/test_slurm.py says how to start it). On CPUs, with gloo; NCCL where there are two GPUs."""

from __future__ import annotations

import json
import os
import pickle
import re
import signal
import subprocess
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from src.common.errors import UserError
from src.training.checkpoint import CHECKPOINT_FILE, Checkpoint
from src.training.distributed import World
from tests.helpers import (
    IN_JOBS,
    ONE_THREAD,
    SWEEP_DIR,
    TWO_TASKS,
    RunMain,
    Train,
    small_state,
    start,
    submitit_task_folders,
    summary_rows,
    wait_for,
)

# Two epochs of about a second each (time to stop a run within the second). 960 training images in
# batches of 7 leave a last batch of one, so that one process's share of it is empty.
ARGS = ("opt.epochs=2", "model.hidden_dim=256", "opt.batch_size=7")
TIMEOUT_S = 240


def run_sweep(mnist_root: Path, cwd: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """Start `python main.py --multirun ARGS` in `cwd`, its output (stdout and stderr) in `stdout`."""
    return start(
        mnist_root,
        cwd,
        "--multirun",
        *args,
        f"hydra.sweep.dir={SWEEP_DIR}",
        env=ONE_THREAD | IN_JOBS | (env or {}),
        merge_output=True,
    )


def metrics(job_dir: Path) -> dict[str, float]:
    record = json.loads((job_dir / "metrics.json").read_text())
    assert record["status"] == "finished"
    return record["metrics"]


def returned_values(task_folder: Path) -> list[float]:
    """What each task of a submitit job returned, by rank, from the results that submitit pickled."""
    values: list[float] = []
    for path in sorted(task_folder.glob("*_result.pkl")):
        outcome, job_return = pickle.loads(path.read_bytes())
        assert outcome == "success"
        values.append(job_return.return_value)
    return values


def submitit_job(job_dir: Path) -> str:
    """The id of the submitit job that runs the Hydra job of `job_dir` (Hydra records it)."""
    return str(OmegaConf.load(job_dir / ".hydra" / "hydra.yaml").hydra.job.id)


def signal_local_task(job_id: str, rank: int, signum: signal.Signals) -> None:
    """Send `signum` to one task of a job that submitit's local launcher runs: a child of its controller,
    whose process id is the job id."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            environ = (stat.parent / "environ").read_bytes().split(b"\0")
        except (OSError, IndexError):
            continue  # a process that ended meanwhile
        if parent == int(job_id) and f"SUBMITIT_LOCAL_GLOBALID={rank}".encode() in environ:
            os.kill(int(stat.parent.name), signum)
            return
    pytest.fail(f"no task of rank {rank} in job {job_id}")


def assert_one_run_per_job(sweep: Path, num_jobs: int) -> None:
    """Rank 0 alone wrote each job's files: one metrics.json per job, one summary row each, each line of the
    log once; and each task returned rank 0's result (the launcher passes on rank 0's)."""
    jobs = [sweep / str(job) for job in range(num_jobs)]
    assert sorted(sweep.rglob("metrics.json")) == [job / "metrics.json" for job in jobs]
    assert sorted(row["job"] for row in summary_rows(sweep)) == [job.name for job in jobs]
    for job in jobs:
        log = (job / "main.log").read_text()
        assert "Data parallel: 2 processes on 1 node(s), gloo; each trains on its share of every batch" in log
        assert log.count("Test: test/acc=") == 1
        assert returned_values(sweep / ".submitit" / submitit_job(job)) == [metrics(job)["val/acc"]] * 2


@pytest.fixture(scope="module")
def two_task_sweep(mnist_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sweep directory of the same two-task job twice, with W&B offline; the first one's rank 1 (only) is
    sent SLURM's stop signal within its second epoch, and so is requeued."""
    cwd = tmp_path_factory.mktemp("two_tasks")
    sweep = cwd / SWEEP_DIR
    process = run_sweep(mnist_root, cwd, "seed=42,42", *TWO_TASKS, *ARGS, "wandb.mode=offline", "wandb.dir=wb")
    wait_for(sweep / "0" / CHECKPOINT_FILE, process)
    signal_local_task(submitit_job(sweep / "0"), rank=1, signum=signal.SIGUSR2)
    output, _ = process.communicate(timeout=TIMEOUT_S)
    assert process.returncode == 0, output
    return sweep


@pytest.mark.slow
def test_a_two_task_job_is_one_run_written_by_rank_0(two_task_sweep: Path) -> None:
    assert_one_run_per_job(two_task_sweep, num_jobs=2)
    # One W&B run per job, not one per process (the requeued job continues its run: a second folder, same id).
    runs = list((two_task_sweep.parent / "wb" / "wandb").glob("offline-run-*"))
    assert len(runs) == 3
    assert len({run.name.rsplit("-", 1)[1] for run in runs}) == 2


@pytest.mark.slow
def test_a_signal_to_one_task_stops_all_at_the_same_step_and_the_requeued_job_ends_as_if_left_alone(
    two_task_sweep: Path,
) -> None:
    task_logs = "".join(path.read_text() for path in sorted((two_task_sweep / ".submitit").glob("*/*_log.*")))
    assert "Stopped for SLURM (preemption or time limit): saved in sweep/0/checkpoint.pt." in task_logs
    assert "Requeued job" in task_logs
    assert re.search(r"Continuing from sweep/0/checkpoint.pt: 1 epoch and [1-9]\d* steps done\.", task_logs)
    assert metrics(two_task_sweep / "0") == metrics(two_task_sweep / "1")  # every metric, bit for bit


@pytest.mark.slow
def test_two_processes_train_as_one_with_the_same_global_batch(
    two_task_sweep: Path, train: Train, tmp_path: Path
) -> None:
    train(*ARGS, "seed=42")
    one, two = metrics(tmp_path / "out"), metrics(two_task_sweep / "1")
    assert one.keys() == two.keys()
    # The same sums, added up in another order: equal up to float rounding (measured: 1.3e-7 at most, in
    # val/loss; every accuracy equal).
    differences = {name: abs(one[name] - two[name]) for name in one}
    assert max(differences.values()) < 1e-5, differences


@pytest.mark.slow
def test_a_task_that_dies_ends_the_job_with_one_line_naming_its_rank(mnist_root: Path, tmp_path: Path) -> None:
    process = run_sweep(mnist_root, tmp_path, *TWO_TASKS, *ARGS)
    wait_for(tmp_path / SWEEP_DIR / "0" / CHECKPOINT_FILE, process)
    job = submitit_job(tmp_path / SWEEP_DIR / "0")
    signal_local_task(job, rank=1, signum=signal.SIGKILL)
    output, _ = process.communicate(timeout=TIMEOUT_S)
    assert process.returncode != 0
    # The job failed, as a run that fails while it trains does, and its log says why.
    assert output.splitlines()[-1] == (
        "Error: every job of the sweep failed (1); each job's log says why, sweep/JOB/main.log."
    )
    log = (tmp_path / SWEEP_DIR / "0" / "main.log").read_text()
    assert (
        f"src.common.errors.RunFailedError: rank 1 of 2 stopped during training (it ended, or hangs); each task's log "
        f"in sweep/.submitit/{job} says why; the run continues from its last checkpoint when started again."
    ) in log.splitlines()


# On SLURM, with dropout: each process draws its own masks, and a requeued job must restore each one's.
SLURM_ARGS = (*ARGS, "model.dropout_prob=0.1")
SLURM_TWO_TASKS = (
    "hydra/launcher=slurm/kyiv",
    "hydra.launcher.tasks_per_node=2",
    "hydra.launcher.cpus_per_task=12",  # both jobs fit the test cluster's 48 CPUs at once
)


@pytest.mark.slow
def test_on_slurm_a_two_task_job_is_one_run_and_ends_as_if_left_alone_when_requeued(
    mnist_root: Path, slurm_env: dict[str, str], sweep_dir: Path
) -> None:
    process = run_sweep(mnist_root, sweep_dir.parent, "seed=42,42", *SLURM_TWO_TASKS, *SLURM_ARGS, env=slurm_env)
    wait_for(sweep_dir / "0" / CHECKPOINT_FILE, process)
    first_job = submitit_task_folders(sweep_dir)[0].name
    # As SLURM does before a preemption or the time limit: the signal goes to every task of the job.
    subprocess.run(["scancel", "--signal=USR2", first_job], env=os.environ | slurm_env, check=True, timeout=10)
    output, _ = process.communicate(timeout=TIMEOUT_S)
    assert process.returncode == 0, output

    assert_one_run_per_job(sweep_dir, num_jobs=2)
    log = "".join(path.read_text() for path in sorted(submitit_task_folders(sweep_dir)[0].glob("*_log.*")))
    assert "Requeued job" in log
    assert re.search(r"Continuing from sweep/0/checkpoint.pt: 1 epoch and [1-9]\d* steps done\.", log), log
    assert metrics(sweep_dir / "0") == metrics(sweep_dir / "1")


@pytest.mark.slow
def test_on_two_slurm_nodes_a_job_trains_as_on_one(
    two_task_sweep: Path, mnist_root: Path, slurm_env: dict[str, str], sweep_dir: Path
) -> None:
    sinfo = ["sinfo", "--noheader", "--Node", "--format=%N"]
    nodes = subprocess.run(sinfo, env=os.environ | slurm_env, capture_output=True, text=True, check=True).stdout
    if len(set(nodes.split())) < 2:
        reason = "the local cluster has one node; for two: SLURM_CLUSTER_NODES=2 scripts/slurm-cluster.sh start"
        if os.environ.get("CI"):  # .ci/run starts two
            pytest.fail(f"CI is set, but {reason}")
        pytest.skip(reason)
    launcher = ("hydra/launcher=slurm/kyiv", "hydra.launcher.nodes=2", "hydra.launcher.cpus_per_task=12")
    process = run_sweep(mnist_root, sweep_dir.parent, *launcher, *ARGS, env=slurm_env)
    output, _ = process.communicate(timeout=TIMEOUT_S)
    assert process.returncode == 0, output
    assert "Data parallel: 2 processes on 2 node(s), gloo" in (sweep_dir / "0" / "main.log").read_text()
    # A process on each node, as two on one node: the same sums, the same metrics, bit for bit.
    assert metrics(sweep_dir / "0") == metrics(two_task_sweep / "1")


@pytest.mark.slow
@pytest.mark.cuda  # in the cuda tier: `pytest -m cuda`, scripts/gpu-check.sh
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs or more")
def test_nccl_with_one_process_per_visible_gpu(run_main: RunMain, train: Train, tmp_path: Path) -> None:
    gpus = torch.cuda.device_count()
    launcher = ("hydra/launcher=submitit_local", f"hydra.launcher.tasks_per_node={gpus}")
    result = run_main(
        "--multirun", *launcher, f"hydra.launcher.gpus_per_node={gpus}", *ARGS, f"hydra.sweep.dir={SWEEP_DIR}",
        env=ONE_THREAD | IN_JOBS,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert (
        f"Data parallel: {gpus} processes on 1 node(s), nccl" in (tmp_path / SWEEP_DIR / "0" / "main.log").read_text()
    )
    train(*ARGS)
    one, many = metrics(tmp_path / "out"), metrics(tmp_path / SWEEP_DIR / "0")
    assert max(abs(one[name] - many[name]) for name in one) < 1e-3


# Refused before anything runs: no process group needed.


def test_each_process_of_a_node_gets_a_gpu_of_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    # CI has no GPU: pretend to have two.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert World(rank=3, size=4, local_rank=1, local_size=2).device(0) == torch.device("cuda", 1)
    assert World(rank=3, size=4, local_rank=1, local_size=2).device(-1) == torch.device("cpu")
    with pytest.raises(UserError, match=r"^3 processes on this node need 3 GPUs, one each, but it shows 2: ask for"):
        World(rank=0, size=3, local_rank=0, local_size=3).device(0)
    with pytest.raises(UserError, match=r"^gpu=1 names one GPU, but each of the 2 processes on a node trains on"):
        World(rank=0, size=2, local_rank=0, local_size=2).device(1)


def test_batch_norm_is_refused_for_several_processes_on_cpus() -> None:
    model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4))
    with pytest.raises(UserError, match=r"^model.norm=BN in a run of 2 processes on CPUs: SyncBatchNorm"):
        World(rank=0, size=2, local_size=2).prepare(model, torch.device("cpu"), seed=1)


def test_a_checkpoint_continues_only_with_as_many_processes(tmp_path: Path) -> None:
    Checkpoint(path=tmp_path / CHECKPOINT_FILE, config={"seed": 1}).save(small_state(1))
    with pytest.raises(UserError, match=r"is the checkpoint of a run of 1 process\(es\), .* not 2, or choose"):
        Checkpoint(path=tmp_path / CHECKPOINT_FILE, config={"seed": 1}, world=World(size=2))


def test_the_shares_of_a_batch_cover_it_once_and_differ_by_one_at_most() -> None:
    for length in (0, 1, 7, 256):
        shares = [World(rank=rank, size=3).shard(length) for rank in range(3)]
        assert [index for share in shares for index in range(share.start, share.stop)] == list(range(length))
        assert max(len(range(s.start, s.stop)) for s in shares) - min(len(range(s.start, s.stop)) for s in shares) <= 1
