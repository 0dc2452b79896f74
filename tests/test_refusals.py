"""Every input that the program refuses, one row each: the command, the first line it prints on stderr,
and its exit code. Never a traceback. A new refusal gets a row here.

Rows run `python main.py ARGS` in a subprocess, as a user does; rows marked `in_process` call `run()` in
this process instead (the `train` fixture), where the subprocess would only add seconds of importing
torch: main.py prints such an error as `Error: <message>` and exits with 1, as the other rows show.
The line compared is the first of the error, after what stderr said before it (log records, Hydra's
notice of a failed job); in an expected line, `…` stands for what differs from machine to machine.
"""

import gzip
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

from src.common.errors import RunFailedError, UserError
from src.datasets.digits import MNIST_FILES
from tests.conftest import REPO, RunMain, Train, write_idx

TINY = ("model.hidden_dim=8", "opt.epochs=1")
STUDY = ("--multirun", "hydra/sweeper=fcn_params", "hydra.sweep.dir=sweep")
TWO_TASKS = ("hydra/launcher=submitit_local", "hydra.launcher.tasks_per_node=2")  # a run of two processes
# The jobs that submitit starts unpickle main.py's function, which imports `src`: from the repository.
IN_JOBS = {"PYTHONPATH": str(REPO)}
API_KEY = "0123456789abcdef0123456789abcdef01234567"  # in WANDB_API_KEY, as W&B would use it
HOW_WANDB_GETS_ITS_KEY = (
    "W&B reads its key from the environment variable WANDB_API_KEY or from ~/.netrc (`wandb login`)."
)
Setup = Callable[[Path, Path, Train], object]  # (working directory, the small MNIST's root, train)


@dataclass(frozen=True)
class Refusal:
    args: tuple[str, ...]
    first_line: str
    exit_code: int = 1
    in_process: bool = False
    env: dict[str, str] = field(default_factory=dict[str, str])
    setup: Setup | None = None  # prepares the working directory (files in the output directory `out`, a data root)
    slow: bool = False  # processes that take more than a few seconds to start (submitit's jobs)


def mnist_copy(cwd: Path, mnist_root: Path, name: str) -> Path:
    """A copy of the small MNIST's files in cwd/NAME/MNIST/raw, to damage."""
    raw = cwd / name / "MNIST" / "raw"
    shutil.copytree(mnist_root / "MNIST" / "raw", raw)
    return raw


def labels_out_of_range(cwd: Path, mnist_root: Path, train: Train) -> None:
    labels = torch.full((300,), 7, dtype=torch.uint8)
    labels[5] = 200
    write_idx(mnist_copy(cwd, mnist_root, "bad") / "t10k-labels-idx1-ubyte", labels)


def damaged_archive(cwd: Path, mnist_root: Path, train: Train) -> None:
    """Only the .gz archives, one of them cut short."""
    raw = mnist_copy(cwd, mnist_root, "gz")
    for name in MNIST_FILES:
        archive = gzip.compress((raw / name).read_bytes())
        (raw / f"{name}.gz").write_bytes(archive[: len(archive) // 2] if name == MNIST_FILES[0] else archive)
        (raw / name).unlink()


def checkpoint_file(contents: bytes | object) -> Setup:
    def setup(cwd: Path, mnist_root: Path, train: Train) -> None:
        (cwd / "out").mkdir()
        if isinstance(contents, bytes):
            (cwd / "out" / "checkpoint.pt").write_bytes(contents)
        else:
            torch.save(contents, cwd / "out" / "checkpoint.pt")

    return setup


def stopped_run() -> Setup:
    """A run in `out` stopped after the checkpoint of its last epoch, before it wrote metrics.json."""

    def setup(cwd: Path, mnist_root: Path, train: Train) -> None:
        train(*TINY)
        (cwd / "out" / "metrics.json").unlink()

    return setup


def other_digits(cwd: Path, mnist_root: Path, train: Train) -> None:
    stopped_run()(cwd, mnist_root, train)
    raw = mnist_copy(cwd, mnist_root, "other")
    labels = (raw / "train-labels-idx1-ubyte").read_bytes()
    (raw / "train-labels-idx1-ubyte").write_bytes(labels[:8] + bytes((label + 1) % 10 for label in labels[8:]))


def earlier_version_checkpoint(cwd: Path, mnist_root: Path, train: Train) -> None:
    """The checkpoint of a stopped run, as the version before the data's fingerprint saved it."""
    stopped_run()(cwd, mnist_root, train)
    saved = torch.load(cwd / "out" / "checkpoint.pt", weights_only=True)
    del saved["data"]
    torch.save(saved, cwd / "out" / "checkpoint.pt")


def stopped_run_of_one_process_in_a_sweep(cwd: Path, mnist_root: Path, train: Train) -> None:
    """A stopped run of one process, in the directory of the first job of the sweep `sweep`."""
    stopped_run()(cwd, mnist_root, train)
    (cwd / "sweep").mkdir()
    (cwd / "out").rename(cwd / "sweep" / "0")


def damaged_record(cwd: Path, mnist_root: Path, train: Train) -> None:
    (cwd / "out" / ".hydra").mkdir(parents=True)
    (cwd / "out" / ".hydra" / "hydra.yaml").write_text("hydra: {overrides: [")
    (cwd / "out" / ".hydra" / "overrides.yaml").write_text("[]")


class Pickled:
    """Any object that is not a tensor or a plain value: loading it could run code."""


REFUSALS = {
    # Hydra's own errors for overrides that the dataclasses do not allow: a block that starts with this line.
    "unknown-key": Refusal(("model=cnn", "model.hidden_dim=10"), "Could not override 'model.hidden_dim'."),
    "wrong-type": Refusal(("opt.lr=fast",), "Error merging override opt.lr=fast"),
    "unknown-option": Refusal(("model=transformer",), "In 'config': Could not find 'model/transformer'"),
    # Keys that `+` adds, which nothing would read.
    "added-key": Refusal(
        ("model=cnn", "+model.hidden_dim=10"),
        "Error: Key 'hidden_dim' not in 'SimpleCNNFactory': +model.hidden_dim would be ignored. "
        "Its keys: kernel_size, pool_stride, activation.",
    ),
    "added-typo": Refusal(
        ("+opt.lrr=0.1",),
        "Error: Key 'lrr' not in 'OptimisationCfg': +opt.lrr would be ignored. "
        "Its keys: lr, weight_decay, optimizer_cls, optimizer_kwargs, epochs, batch_size, mixed_precision.",
    ),
    "added-top-level": Refusal(
        ("+epochs=3",),
        "Error: Key 'epochs' not in 'Config': +epochs would be ignored. Its keys: dm, model, opt, wandb, seed, gpu, "
        "threads.",
    ),
    # Values that make no sense.
    "val-prop": Refusal(("dm.val_prop=1.5",), "Error: dm.val_prop=1.5 must be strictly between 0 and 1."),
    "negative-lr": Refusal(("opt.lr=-1",), "Error: opt.lr=-1.0 must be a positive number."),
    "nan-lr": Refusal(("opt.lr=nan",), "Error: opt.lr=nan must be a positive number."),
    "inf-lr": Refusal(("opt.lr=inf",), "Error: opt.lr=inf must be a positive number."),
    "nan-weight-decay": Refusal(("opt.weight_decay=nan",), "Error: opt.weight_decay=nan must be a number, 0 or more."),
    "num-colors": Refusal(("dm.num_colors=0",), "Error: dm.num_colors=0 must be between 1 and 10."),
    "colour": Refusal(
        ("dm.colors=[3]", "dm.num_colors=2"), "Error: dm.colors has 3, which is not a palette entry: use 0 to 1."
    ),
    "label-map": Refusal(("+dm.label_map={0: 1}",), "Error: dm.label_map={0: 1} must map to the labels 0 to 0."),
    "no-effect": Refusal(
        ("model=single_linear_layer", "model.hidden_dim=20"),
        "Error: model.hidden_dim=20 has no effect without hidden layers (model.num_hidden=0): "
        "set model.num_hidden to 1 or more, or leave model.hidden_dim unset.",
    ),
    "one-label": Refusal(
        ("+dm.label_map={3: 0}",), "Error: dm.label_map={3: 0} maps to one label: a classifier needs two or more."
    ),
    "gpu": Refusal(("gpu=-2",), "Error: gpu=-2 is not a device: use a CUDA device index, or -1 for the CPU."),
    "kernel": Refusal(
        ("model=cnn", "model.kernel_size=13"),
        "Error: model.kernel_size=13 is too large for 28x28 images: two convolution blocks leave nothing to pool. "
        "Use a smaller model.kernel_size or a larger dm.default_res.",
    ),
    "seed": Refusal(
        ("seed=99999999999999999999",),
        "Error: seed=99999999999999999999 is not a seed torch can use: use an integer from 0 to 2**64 - 1.",
    ),
    "split-seed": Refusal(
        ("dm=celeba", "dm.split_seed=-99999999999999999999"),
        "Error: dm.split_seed=-99999999999999999999 is not a seed torch can use: use an integer from 0 to 2**64 - 1.",
    ),
    "interpolation": Refusal(
        ("wandb.name=${oc.env:NO_SUCH_VAR}",),
        "Error: cannot resolve wandb.name: Environment variable 'NO_SUCH_VAR' not found.",
    ),
    "missing-value": Refusal(
        ("wandb.name=???",),
        "Error: wandb.name is ??? (a value to be given): set it, e.g. on the command line as wandb.name=VALUE.",
    ),
    # Code that a config names, and secrets that a config would log.
    "untrusted-optimiser": Refusal(
        ("opt.optimizer_cls=os.system",),
        "Error: opt.optimizer_cls=os.system is not from a trusted module ('torch.optim',); "
        "if you trust its code, add its module to TRUSTED_OPTIMIZER_MODULES in src/optimisation.py.",
    ),
    "untrusted-class": Refusal(
        ("opt.optimizer_cls=torch.nn.Linear",),
        "Error: opt.optimizer_cls=torch.nn.Linear is not from a trusted module ('torch.optim',); "
        "if you trust its code, add its module to TRUSTED_OPTIMIZER_MODULES in src/optimisation.py.",
    ),
    "no-optimiser": Refusal(
        ("opt.optimizer_cls=torch.optim.lr_scheduler.StepLR",),
        "Error: opt.optimizer_cls=torch.optim.lr_scheduler.StepLR is not an optimiser class; "
        "use a dotted path such as torch.optim.SGD.",
        in_process=True,
    ),
    "credential-key": Refusal(
        ("wandb.mode=offline", "+wandb.API_KEY=abc"),
        "Error: the config has a setting named like a credential, wandb.API_KEY, and the config is logged: remove "
        f"it, and keep secrets out of the config. {HOW_WANDB_GETS_ITS_KEY}",
    ),
    "credential-in-kwargs": Refusal(
        ("+opt.optimizer_kwargs={Secret_Token: abc}",),
        "Error: the config has a setting named like a credential, opt.optimizer_kwargs.Secret_Token, and the config "
        f"is logged: remove it, and keep secrets out of the config. {HOW_WANDB_GETS_ITS_KEY}",
    ),
    "credential-value": Refusal(
        ("wandb.name=${oc.env:WANDB_API_KEY}",),
        f"Error: the config holds the W&B API key, and the config is logged: remove it. {HOW_WANDB_GETS_ITS_KEY}",
        env={"WANDB_API_KEY": API_KEY},
    ),
    "credential-in-a-sweep": Refusal(
        ("--multirun", "seed=1,2", "+wandb.api_token=abc,def"),
        "Error: the config has a setting named like a credential, wandb.api_token, and the config is logged: remove "
        f"it, and keep secrets out of the config. {HOW_WANDB_GETS_ITS_KEY}",
    ),
    "credential-value-in-a-sweep": Refusal(
        ("--multirun", f"wandb.name=a,{API_KEY}"),
        f"Error: the config holds the W&B API key, and the config is logged: remove it. {HOW_WANDB_GETS_ITS_KEY}",
        env={"WANDB_API_KEY": API_KEY},
    ),
    "wandb-mode": Refusal(
        TINY,
        "Error: WANDB_MODE=fast is not a W&B mode: use online, offline or disabled, or set wandb.mode.",
        in_process=True,
        env={"WANDB_MODE": "fast"},
    ),
    # Optimiser arguments that torch refuses.
    "optimiser-argument": Refusal(
        ("+opt.optimizer_kwargs={warp: 9}",),
        "Error: opt.optimizer_kwargs={'warp': 9} do not fit torch.optim.AdamW: "
        "AdamW.__init__() got an unexpected keyword argument 'warp'",
        in_process=True,
    ),
    "optimiser-value": Refusal(
        ("+opt.optimizer_kwargs={betas: [2.0, 0.9]}",),
        "Error: opt.optimizer_kwargs={'betas': [2.0, 0.9]} do not fit torch.optim.AdamW: "
        "Invalid beta parameter at index 0: 2.0",
        in_process=True,
    ),
    # Data.
    "no-mnist": Refusal(
        ("dm.digits=MNIST", "dm.root=nowhere", "dm.download=false"),
        "Error: dm.digits=MNIST, but there are no MNIST files in nowhere/MNIST/raw and dm.download=false. "
        "Put the four MNIST files there, or set dm.root to where they are.",
        in_process=True,
    ),
    "mnist-labels": Refusal(
        ("dm.root=bad",),
        "Error: the MNIST files in bad/MNIST/raw are not MNIST: t10k-labels-idx1-ubyte holds labels from 7 to 200, "
        "not 0 to 9; delete them and run again.",
        in_process=True,
        setup=labels_out_of_range,
    ),
    "mnist-archive": Refusal(
        ("dm.root=gz",),
        "Error: the MNIST archive gz/MNIST/raw/train-images-idx3-ubyte.gz is damaged (Compressed file ended "
        "before the end-of-stream marker was reached); delete it, and the next run downloads it again.",
        in_process=True,
        setup=damaged_archive,
    ),
    "no-validation-digits": Refusal(
        ("dm.val_prop=1e-9",),
        "Error: the val split has no digits (dm.val_prop=1e-09, dm.label_map=None); "
        "choose a dm.val_prop that leaves digits for both training and validation.",
        in_process=True,
    ),
    "no-training-digits": Refusal(
        ("dm.val_prop=0.999999",),
        "Error: the train split has no digits (dm.val_prop=0.999999, dm.label_map=None); "
        "choose a dm.val_prop that leaves digits for both training and validation.",
        in_process=True,
    ),
    # Runs too large for the memory, told before anything is allocated.
    "data-too-large": Refusal(
        ("dm.digits=SYNTHETIC", "dm.default_res=100000"),
        "Error: the prepared data would take 700000.0 GB (dm.default_res=100000), more than the … GB available on "
        "the CPU; use a smaller dm.default_res.",
        in_process=True,
    ),
    "model-too-large": Refusal(
        ("model.hidden_dim=10000000", "gpu=-1"),
        "Error: the model has more than 23.5 G parameters: their weights and gradients alone take 188.2 GB, more "
        "than the … GB available on the CPU; use a smaller model (such as model.hidden_dim or model.num_hidden), "
        "or smaller images (dm.default_res).",
        in_process=True,
    ),
    "model-too-deep": Refusal(
        ("model.num_hidden=1000000000",),  # refused as soon as the weights counted are too many, not once built
        "Error: the model has more than … parameters: their weights and gradients alone take … GB, more than the "
        "… GB available on the CPU; use a smaller model (such as model.hidden_dim or model.num_hidden), or "
        "smaller images (dm.default_res).",
        in_process=True,
    ),
    "batch-norm-batch-of-one": Refusal(
        ("model.norm=BN", "opt.batch_size=959", *TINY),
        "Error: the model's batch norm cannot train on a batch of one image, and opt.batch_size=959 makes the last "
        "batch of each epoch (960 training images) one image: choose another opt.batch_size.",
        in_process=True,
    ),
    # Training that diverges: the run fails (in a sweep, the trial), with the epoch and the step.
    "diverged": Refusal(
        ("opt.lr=1e30", *TINY),
        "Error: the training loss became nan at epoch 1, step 2; training diverged: try a smaller opt.lr. "
        "The checkpoint of the last epoch, if any, is intact.",
        in_process=True,
    ),
    # Checkpoints that cannot be continued.
    "empty-checkpoint": Refusal(
        TINY,
        "Error: cannot read the checkpoint out/checkpoint.pt (it is empty); move it away to start this run afresh.",
        in_process=True,
        setup=checkpoint_file(b""),
    ),
    "foreign-checkpoint": Refusal(
        TINY,
        "Error: cannot read the checkpoint out/checkpoint.pt (it is not a file that torch.save wrote); "
        "move it away to start this run afresh.",
        in_process=True,
        setup=checkpoint_file(b"weights, as text"),
    ),
    "other-program's-checkpoint": Refusal(
        TINY,
        "Error: cannot read the checkpoint out/checkpoint.pt (it is not a checkpoint of this program); "
        "move it away to start this run afresh.",
        in_process=True,
        setup=checkpoint_file({"model": torch.zeros(3)}),
    ),
    "checkpoint-with-code": Refusal(
        TINY,
        "Error: cannot read the checkpoint out/checkpoint.pt (it holds objects other than tensors and plain values, "
        "which are not loaded: they could run code); move it away to start this run afresh.",
        in_process=True,
        setup=checkpoint_file({"config": Pickled()}),
    ),
    "checkpoint-of-an-earlier-version": Refusal(
        TINY,
        "Error: cannot read the checkpoint out/checkpoint.pt (an earlier version of this program saved it, without "
        "the fingerprint of its data); move it away to start this run afresh.",
        in_process=True,
        setup=earlier_version_checkpoint,
    ),
    "checkpoint-of-other-settings": Refusal(
        (*TINY, "opt.lr=1e-3"),
        "Error: out/checkpoint.pt is the checkpoint of a run with other settings (opt.lr: 5e-05 -> 0.001); "
        "continue it with the settings it was started with, or choose another output directory.",
        in_process=True,
        setup=stopped_run(),
    ),
    "checkpoint-of-other-data": Refusal(
        (*TINY, "dm.root=other"),
        "Error: out/checkpoint.pt was trained on other data: continue it on the data it started with (check "
        "dm.root and the files there), or choose another output directory.",
        in_process=True,
        setup=other_digits,
    ),
    "checkpoint-is-a-folder": Refusal(
        TINY,
        "Error: out/checkpoint.pt is not a file: move it away, so that the run can save its checkpoint there.",
        in_process=True,
        setup=lambda cwd, mnist_root, train: (cwd / "out" / "checkpoint.pt").mkdir(parents=True),
    ),
    "metrics-is-a-folder": Refusal(
        TINY,
        "Error: out/metrics.json is not a file: move it away, so that the run can write it.",
        in_process=True,
        setup=lambda cwd, mnist_root, train: (cwd / "out" / "metrics.json").mkdir(parents=True),
    ),
    "wandb-dir-is-a-file": Refusal(
        (*TINY, "wandb.mode=offline", "wandb.dir=a_file"),
        "Error: cannot write W&B's files to wandb.dir=a_file ([Errno 17] File exists: '…/a_file'); "
        "set it to a writable folder.",
        in_process=True,
        setup=lambda cwd, mnist_root, train: (cwd / "a_file").touch(),
    ),
    "rerun-of-nothing": Refusal(
        ("--experimental-rerun", "nowhere"),
        "Error: --experimental-rerun nowhere: that is not the output directory of a run (it has no .hydra/hydra.yaml); "
        "give one such as outputs/DATE/TIME, or multirun/DATE/TIME/0 for a job.",
    ),
    "rerun-of-a-damaged-record": Refusal(
        ("--experimental-rerun", "out"),
        "Error: --experimental-rerun out: that is not the output directory of a run (…); give one such as "
        "outputs/DATE/TIME, or multirun/DATE/TIME/0 for a job.",
        setup=damaged_record,
    ),
    "rerun-as-a-multirun": Refusal(
        ("--experimental-rerun", "out", "--multirun"),
        "Error: --experimental-rerun reruns one run: leave out --multirun.",
    ),
    "credential-for-hydra": Refusal(
        ("+hydra.job.env_set.WANDB_API_KEY=abc",),
        "Error: the config has a setting named like a credential, hydra.job.env_set.WANDB_API_KEY, and the config "
        f"is logged: remove it, and keep secrets out of the config. {HOW_WANDB_GETS_ITS_KEY}",
    ),
    # Sweeps.
    "slurm-without-slurm": Refusal(
        ("--multirun", "seed=1,2", "hydra/launcher=slurm/kyiv"),
        "Error: hydra/launcher=slurm/kyiv submits the jobs to SLURM, but this machine has no SLURM (no srun on the "
        "PATH): start the sweep on the cluster's login node, or leave out hydra/launcher to run the jobs here.",
        env={"PATH": "/nonexistent"},  # whether or not this machine has SLURM
    ),
    "batch-norm-in-processes-on-cpus": Refusal(
        ("--multirun", *TWO_TASKS, "model.norm=BN", "hydra.sweep.dir=sweep"),
        "Error: model.norm=BN in a run of 2 processes on CPUs: SyncBatchNorm, which normalises over the whole "
        "batch, needs GPUs; use model.norm=LN, GPUs, or one task.",
        env=IN_JOBS,
        slow=True,
    ),
    "checkpoint-of-another-number-of-processes": Refusal(
        ("--multirun", *TWO_TASKS, *TINY, "hydra.sweep.dir=sweep"),
        "Error: sweep/0/checkpoint.pt is the checkpoint of a run of 1 process(es), each with its own random state; "
        "continue it with 1 (hydra.launcher.tasks_per_node times hydra.launcher.nodes), not 2, or choose another "
        "output directory.",
        env=IN_JOBS,
        setup=stopped_run_of_one_process_in_a_sweep,
        slow=True,
    ),
    "optuna-n-jobs": Refusal((*STUDY, "hydra.sweeper.n_jobs=0"), "Error: hydra.sweeper.n_jobs=0 must be 1 or more."),
    "optuna-n-trials": Refusal(
        (*STUDY, "hydra.sweeper.n_trials=-1"), "Error: hydra.sweeper.n_trials=-1 must be 1 or more."
    ),
    "optuna-failure-rate": Refusal(
        (*STUDY, "hydra.sweeper.max_failure_rate=1.5"),
        "Error: hydra.sweeper.max_failure_rate=1.5 must be between 0 and 1.",
    ),
    "optuna-direction": Refusal(
        (*STUDY, "hydra.sweeper.direction=[up]"),
        "Error: hydra.sweeper.direction=up: main() returns one number, val/acc, so give one direction: "
        "maximize (or minimize).",
    ),
    "optuna-two-directions": Refusal(
        (*STUDY, "hydra.sweeper.direction=[maximize,minimize]"),
        "Error: hydra.sweeper.direction=['maximize', 'minimize']: main() returns one number, val/acc, so give one "
        "direction: maximize (or minimize).",
    ),
    "optuna-pruner-without-storage": Refusal(
        (*STUDY, "hydra/sweeper/pruner=median", "hydra.sweeper.storage=null"),
        "Error: hydra.sweeper.pruner=optuna.pruners.MedianPruner needs a stored study, where each job reports to "
        "its trial: set hydra.sweeper.storage and hydra.sweeper.study_name.",
    ),
    "optuna-storage": Refusal(
        (*STUDY, "hydra.sweeper.storage=postgress://db/study"),
        "Error: hydra.sweeper.storage=postgress://db/study: a study must be kept in a file that every sweep process "
        "and job reaches, a journal file (storage: fcn_params.journal) or an SQLite database "
        "(storage: sqlite:///fcn_params.db).",
    ),
    "optuna-storage-folder": Refusal(
        (*STUDY, "hydra.sweeper.storage=sqlite:///no/such/folder.db"),
        "Error: hydra.sweeper.storage=sqlite:///no/such/folder.db: the folder no/such does not exist; create it, or "
        "keep the study in a folder that does.",
    ),
    "optuna-reversed-range": Refusal(
        (*STUDY, "opt.lr=interval(1e-3,1e-5)"),
        "Error: the search space opt.lr=interval(1e-3,1e-5) is not one Optuna can sample: "
        "`low <= high` must hold, but got (low=0.001, high=1e-05).",
    ),
    "optuna-empty-range": Refusal(
        (*STUDY, "model.num_hidden=range(3,3)"),
        "Error: the search space model.num_hidden=range(3,3) is not one Optuna can sample: "
        "An Optuna range sweep must contain at least one value.",
    ),
    "optuna-sampler-seed": Refusal(
        (*STUDY, "hydra.sweeper.sampler.seed=-1"),
        "Error: hydra.sweeper.sampler.seed=-1 must be from 0 to 2**32 - 1, as numpy's seeds are.",
    ),
    "optuna-grid-of-an-interval": Refusal(
        (*STUDY, "hydra/sweeper/sampler=grid"),
        "Error: the search space opt.lr=tag(log, interval(1.e-5, 1.e-3)) is continuous, and "
        "hydra/sweeper/sampler=grid needs a finite set of values: give it choice(...) or range(...), or use "
        "another sampler.",
    ),
    "optuna-every-trial-failed": Refusal(
        (*STUDY, "hydra.sweeper.n_trials=2", "hydra.sweeper.n_jobs=1", "opt.lr=1e30", *TINY),
        "Error: no trial of the study fcn_params has completed: the job directories' logs say why.",
    ),
    # CPU threads.
    "threads": Refusal(
        ("threads=0",), "Error: threads=0 must be 1 or more, or null for this process's share of the cores."
    ),
    "omp-num-threads": Refusal(
        TINY,
        "Error: OMP_NUM_THREADS=all is not a number of threads: set it to 1 or more, or unset it for this process's "
        "share of the cores.",
        in_process=True,
        env={"OMP_NUM_THREADS": "all"},
    ),
}


# Lines on stderr before the error: log records (Optuna's), and Hydra's notice of each job that failed.
EARLIER_NEWS = re.compile(r"^\[(\w )?\d{4}-\d\d-\d\d |^Error executing job with overrides: ")


def error_line(stderr: str) -> str:
    """The first line of the error that ended the program."""
    return next((line for line in stderr.splitlines() if not EARLIER_NEWS.match(line)), "")


def matches(line: str, expected: str) -> bool:
    return re.fullmatch(".*".join(map(re.escape, expected.split("…"))), line) is not None


@pytest.mark.parametrize(
    "refusal",
    [
        pytest.param(refusal, id=name, marks=[pytest.mark.slow] if refusal.slow else [])
        for name, refusal in REFUSALS.items()
    ],
)
def test_refusal(
    refusal: Refusal,
    *,
    run_main: RunMain,
    train: Train,
    mnist_root: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if refusal.setup is not None:
        refusal.setup(tmp_path, mnist_root, train)
    if refusal.in_process:
        for name, value in refusal.env.items():
            monkeypatch.setenv(name, value)
        with pytest.raises((UserError, RunFailedError)) as error:
            train(*refusal.args)
        first_line, exit_code = f"Error: {error.value}", 1
    else:
        result = run_main(*refusal.args, env=refusal.env)
        assert "Traceback" not in result.stdout + result.stderr, result.stdout + result.stderr
        first_line, exit_code = error_line(result.stderr), result.returncode
    assert matches(first_line, refusal.first_line), f"\n{first_line}\n{refusal.first_line}"
    assert exit_code == refusal.exit_code
