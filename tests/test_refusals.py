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

import optuna
import pytest
import torch
from optuna.distributions import FloatDistribution

from src.common.errors import RunFailedError, UserError
from src.datasets.digits import MNIST_FILES
from tests.helpers import IN_JOBS, TINY, TWO_TASKS, RunMain, Train, load_study_storage, write_idx
from tests.helpers import STUDY as STUDY_COMMAND

STUDY = (*STUDY_COMMAND, "hydra.sweep.dir=sweep")
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


# For the hostile inputs (issue 20) at the end of the table.
LEAKY_EXPERIMENT = f"""# @package _global_
hydra:
  job:
    env_set:
      WANDB_API_KEY: {API_KEY}
"""
LEAKY_SEARCH_SPACE = f"""defaults:
  - fcn_params
params:
  wandb.name: choice(a, {API_KEY})
"""
IN_OWN_CONFIGS = ("--config-dir", "own_conf")
WHAT_NO_KEY_DOES = f"and the config is logged: remove it. {HOW_WANDB_GETS_ITS_KEY}"


def own_config(group: str, text: str) -> Setup:
    """A config file of the user's, `own_conf/GROUP/leaky.yaml`."""

    def setup(cwd: Path, mnist_root: Path, train: Train) -> None:
        (cwd / "own_conf" / group).mkdir(parents=True)
        (cwd / "own_conf" / group / "leaky.yaml").write_text(text)

    return setup


def folder(path: str) -> Setup:
    return lambda cwd, mnist_root, train: (cwd / path).mkdir(parents=True)


def a_file(path: str, text: str = "") -> Setup:
    def setup(cwd: Path, mnist_root: Path, train: Train) -> None:
        (cwd / path).parent.mkdir(parents=True, exist_ok=True)
        (cwd / path).write_text(text)

    return setup


def damaged_journal(damage: Callable[[list[bytes]], list[bytes]]) -> Setup:
    """The journal of the study fcn_params with one finished trial, its lines then damaged."""

    def setup(cwd: Path, mnist_root: Path, train: Train) -> None:
        journal = cwd / "fcn_params.journal"
        study = optuna.create_study(study_name="fcn_params", storage=load_study_storage(journal), direction="maximize")
        study.tell(study.ask({"opt.lr": FloatDistribution(1e-5, 1e-3)}), 0.5)
        journal.write_bytes(b"\n".join(damage(journal.read_bytes().split(b"\n"))))

    return setup


def foreign_record(cwd: Path, mnist_root: Path, train: Train) -> None:
    (cwd / "out" / ".hydra").mkdir(parents=True)
    (cwd / "out" / ".hydra" / "hydra.yaml").write_text("hydra: {overrides: {hydra: []}, job: {config_name: config}}")
    (cwd / "out" / ".hydra" / "overrides.yaml").write_text("{model: cnn}")


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
        ("model=cnn", "model.kernel_size=14"),
        "Error: model.kernel_size=14 is too large for 28x28 images: two convolution blocks leave nothing to pool. "
        "Use a smaller model.kernel_size or a larger dm.default_res.",
        in_process=True,
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
        "Error: the config holds the W&B API key, in wandb.name, and the config is logged: remove it. "
        f"{HOW_WANDB_GETS_ITS_KEY}",
        env={"WANDB_API_KEY": API_KEY},
    ),
    "credential-in-a-sweep": Refusal(
        ("--multirun", "seed=1,2", "+wandb.api_token=abc,def"),
        "Error: the config has a setting named like a credential, wandb.api_token, and the config is logged: remove "
        f"it, and keep secrets out of the config. {HOW_WANDB_GETS_ITS_KEY}",
    ),
    "credential-value-in-a-sweep": Refusal(
        ("--multirun", f"wandb.name=a,{API_KEY}"),
        "Error: the config holds the W&B API key, in wandb.name, and the config is logged: remove it. "
        f"{HOW_WANDB_GETS_ITS_KEY}",
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
        "Error: torch.optim.AdamW cannot train with opt.lr=5e-05, opt.weight_decay=0.0, "
        "opt.optimizer_kwargs={'warp': 9}: AdamW.__init__() got an unexpected keyword argument 'warp'",
        in_process=True,
    ),
    "optimiser-value": Refusal(
        ("+opt.optimizer_kwargs={betas: [2.0, 0.9]}",),
        "Error: torch.optim.AdamW cannot train with opt.lr=5e-05, opt.weight_decay=0.0, "
        "opt.optimizer_kwargs={'betas': [2.0, 0.9]}: Invalid beta parameter at index 0: 2.0",
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
    # One W&B run for every job of a multirun: the mode set here, or in W&B's own settings.
    "one-wandb-run-for-every-job": Refusal(
        ("--multirun", "seed=1,2", "wandb.mode=offline", "wandb.id=fixedid"),
        "Error: wandb.id=fixedid in a multirun would make every job the one W&B run fixedid, each logging over the "
        "others: leave wandb.id unset (each job is then a W&B run of its own), or give each job its own "
        "(wandb.id=a,b,...).",
    ),
    "one-wandb-run-for-every-job-in-wandbs-mode": Refusal(
        ("--multirun", "model=cnn,fcn", "wandb.id=mine"),
        "Error: wandb.id=mine in a multirun would make every job the one W&B run mine, each logging over the others: …",
        env={"WANDB_MODE": "offline"},
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
        slow=True,
    ),
    # The memory of a node is shared by the processes of a run on it: the data counts once, the rest in each.
    "processes-too-many-for-the-node": Refusal(
        (
            "--multirun",
            "hydra/launcher=submitit_local",
            "hydra.launcher.tasks_per_node=4",
            "gpu=-1",
            "dm=celeba",
            "dm.default_res=128",
            "model.hidden_dim=1000000",
            "hydra.sweep.dir=sweep",
        ),
        "Error: 4 processes on this node need at least 1572.9 GB: the prepared data once (0.0 GB, which they share), "
        "and in each the weights and gradients of more than 49.2 G parameters (393.2 GB), more than the … GB "
        "available on the CPU; use fewer processes per node (hydra.launcher.tasks_per_node), or a smaller model "
        "(such as model.hidden_dim or model.num_hidden), or smaller images (dm.default_res).",
        env=IN_JOBS,
        slow=True,
    ),
    # Hostile inputs (issue 20), by class; tests/test_hostile_inputs.py tries each class with others.
    # 1. Secrets, checked as the config is used: Hydra's part, resolved, and the sweeper's search space.
    "secret-in-the-output-directory": Refusal(
        ("hydra.run.dir=out/${oc.env:WANDB_API_KEY}",),
        f"Error: the config holds the W&B API key, in hydra.run.dir, {WHAT_NO_KEY_DOES}",
        env={"WANDB_API_KEY": API_KEY},
    ),
    "secret-in-the-sweep-directory": Refusal(
        ("--multirun", "seed=1,2", "hydra.sweep.dir=sweeps/${oc.env:WANDB_API_KEY}"),
        f"Error: the config holds the W&B API key, in hydra.sweep.dir, {WHAT_NO_KEY_DOES}",
        env={"WANDB_API_KEY": API_KEY},
    ),
    "secret-in-the-log-file's-name": Refusal(
        ("hydra.job.name=${oc.env:WANDB_API_KEY}",),
        f"Error: the config holds the W&B API key, in hydra.job.name, {WHAT_NO_KEY_DOES}",
        env={"WANDB_API_KEY": API_KEY},
    ),
    "secret-in-the-study's-name": Refusal(
        (*STUDY, "hydra.sweeper.study_name=${oc.env:WANDB_API_KEY}"),
        f"Error: the config holds the W&B API key, in hydra.sweeper.study_name, {WHAT_NO_KEY_DOES}",
        env={"WANDB_API_KEY": API_KEY},
    ),
    "secret-in-an-experiment-file": Refusal(
        (*IN_OWN_CONFIGS, "+experiment=leaky"),
        "Error: the config has a setting named like a credential, hydra.job.env_set.WANDB_API_KEY, and the config "
        f"is logged: remove it, and keep secrets out of the config. {HOW_WANDB_GETS_ITS_KEY}",
        env={"WANDB_API_KEY": API_KEY},
        setup=own_config("experiment", LEAKY_EXPERIMENT),
    ),
    "secret-in-the-search-space": Refusal(
        ("--multirun", *IN_OWN_CONFIGS, "hydra/sweeper=leaky", "hydra.sweep.dir=sweep"),
        f"Error: the config holds the W&B API key, in hydra.sweeper.params.wandb.name, {WHAT_NO_KEY_DOES}",
        env={"WANDB_API_KEY": API_KEY},
        setup=own_config("hydra/sweeper", LEAKY_SEARCH_SPACE),
    ),
    # 2. Files of the wrong kind: one line that names the path, wherever the program (or Hydra) meets them.
    "lock-file-is-a-folder": Refusal(
        ("hydra.run.dir=out", *TINY),
        "Error: out/.run.lock is a folder, where the program writes a file: move it away, or choose another path.",
        setup=folder("out/.run.lock"),
    ),
    "log-file-is-a-folder": Refusal(
        ("hydra.run.dir=out", *TINY),
        "Error: out/main.log is a folder, where the program writes a file: move it away, or choose another path.",
        setup=folder("out/main.log"),
    ),
    "record-is-a-file": Refusal(
        ("hydra.run.dir=out", *TINY),
        "Error: out/.hydra is a file, where the program makes a folder: move it away, or choose another path.",
        setup=a_file("out/.hydra"),
    ),
    "summary-is-a-folder": Refusal(
        ("--multirun", "seed=1", *TINY, "hydra.sweep.dir=sweep"),
        "Error: sweep/summary.csv is a folder, where the program writes a file: move it away, or choose another path.",
        setup=folder("sweep/summary.csv"),
        slow=True,
    ),
    "journal-is-a-folder": Refusal(
        STUDY,
        "Error: hydra.sweeper.storage=fcn_params.journal: fcn_params.journal is not a file; move it away, or keep "
        "the study in another file.",
        setup=folder("fcn_params.journal"),
    ),
    "database-is-a-folder": Refusal(
        (*STUDY, "hydra.sweeper.storage=sqlite:///study.db"),
        "Error: hydra.sweeper.storage=sqlite:///study.db: study.db is not a file; move it away, or keep the study "
        "in another file.",
        setup=folder("study.db"),
    ),
    "database-is-text": Refusal(
        (*STUDY, "hydra.sweeper.storage=sqlite:///study.db"),
        "Error: hydra.sweeper.storage=sqlite:///study.db: study.db is not an SQLite database; move it away, or keep "
        "the study in another file.",
        setup=a_file("study.db", "a study, as text"),
    ),
    "home-of-no-user": Refusal(
        ("dm.root='~no_such_user/data'",),
        "Error: dm.root=~no_such_user/data: ~no_such_user is the home of a user, and this machine has no such user; "
        "give the path in full.",
        in_process=True,
    ),
    "data-in-the-home-of-no-user": Refusal(
        TINY,
        "Error: dm.root=~no_such_user/data: ~no_such_user is the home of a user, and this machine has no such user; "
        "give the path in full.",
        in_process=True,
        env={"HYDRA_EXAMPLE_DATA": "~no_such_user/data"},
    ),
    "wandb-in-the-home-of-no-user": Refusal(
        (*TINY, "wandb.mode=offline", "wandb.dir='~no_such_user/wandb'"),
        "Error: wandb.dir=~no_such_user/wandb: ~no_such_user is the home of a user, and this machine has no such "
        "user; give the path in full.",
        in_process=True,
    ),
    # 3. A damaged study is never written on.
    "journal-cut-short": Refusal(
        STUDY,
        "Error: the study's journal fcn_params.journal ends in a record cut short (a full disk, or a machine that "
        "stopped while it was written): Optuna never read that record, but what is written after it would be lost "
        "with it. Keep a copy of the file, delete its incomplete last line, and run again.",
        setup=damaged_journal(lambda lines: [*lines[:-2], lines[-2][:-9]]),
    ),
    "journal-with-a-garbled-line": Refusal(
        STUDY,
        "Error: line 2 of the study's journal fcn_params.journal is not a record of Optuna's: the file is damaged, "
        "or no journal of Optuna's, and the study cannot be read whole. Restore it from a copy, or keep the study "
        "in another file (hydra.sweeper.storage).",
        setup=damaged_journal(lambda lines: [lines[0], b'{"op_code": 1, "worker', *lines[2:]]),
    ),
    "study-without-a-name": Refusal(
        (*STUDY, "hydra.sweeper.study_name=null"),
        "Error: hydra.sweeper.study_name=null: a stored study needs a name, by which the next sweep continues it and "
        "each job finds its trial; give it one.",
    ),
    # 4. The config's schema, W&B's settings, and code that a config names.
    "model-deleted": Refusal(
        ("~model", *TINY),
        "Error: ~model deletes model, which every run needs: choose another with model=NAME (`python main.py "
        "--help` lists them).",
    ),
    "data-deleted": Refusal(
        ("~dm",),
        "Error: ~dm deletes dm, which every run needs: choose another with dm=NAME (`python main.py --help` lists "
        "them).",
    ),
    "opt-deleted": Refusal(
        ("~opt", "opt.epochs=1"),
        "Error: ~opt deletes opt, which every run needs: change its settings instead (opt.KEY=VALUE).",
    ),
    "no-model": Refusal(
        ("model=null",),
        "Error: model=null: a config group takes the name of one of its options, not null: choose one (model=NAME; "
        "`python main.py --help` lists them), or leave it out.",
    ),
    "interpolation-in-hydra's-part": Refusal(
        ("hydra.run.dir=${oc.env:NO_SUCH_VAR}",),
        "Error: cannot resolve hydra.run.dir: Environment variable 'NO_SUCH_VAR' not found.",
    ),
    "optimiser-argument-set-twice": Refusal(
        ("+opt.optimizer_kwargs={lr: 1}",),
        "Error: opt.optimizer_kwargs={'lr': 1} sets lr, as opt.lr does: set it there.",
    ),
    "wandb-resume": Refusal(
        (*TINY, "wandb.mode=offline", "wandb.resume=bogus"),
        "Error: W&B refuses wandb.resume: Input should be 'allow', 'must', 'never' or 'auto'; change it.",
        in_process=True,
    ),
    "wandb-advice-offline": Refusal(
        (*TINY, "wandb.mode=offline", "wandb.id=a/b"),
        "Error: W&B cannot start in offline mode: Run ID cannot contain the characters: :;,#?/'",
        in_process=True,
    ),
    "optimiser-that-cannot-step": Refusal(
        ("+opt.optimizer_kwargs={differentiable: true}",),
        "Error: torch.optim.AdamW cannot train with opt.lr=5e-05, opt.weight_decay=0.0, "
        "opt.optimizer_kwargs={'differentiable': True}: a leaf Variable that requires grad is being used in an "
        "in-place operation.",
        in_process=True,
    ),
    "callback-not-whitelisted": Refusal(
        ("+hydra.callbacks.mine._target_=os.getcwd",),
        "Error: hydra.callbacks.mine._target_=os.getcwd: a config may only name this program's code (src.*); remove "
        "that callback, or, if you trust its code, add its module to EXECUTION_WHITELIST in src/common/targets.py.",
    ),
    "sampler-not-a-sampler": Refusal(
        (*STUDY, "hydra.sweeper.sampler._target_=os.getcwd"),
        "Error: hydra.sweeper.sampler._target_=os.getcwd is not a BaseSampler that this program knows: choose one "
        "with hydra/sweeper/sampler=NAME (…).",
    ),
    # 6. Trials that can never run: refused before the sweep starts.
    "search-space-that-never-runs": Refusal(
        (*STUDY, "model.num_hidden=choice(0)", "model.hidden_dim=16"),
        "Error: no trial of the search space can run: model.hidden_dim=16 has no effect without hidden layers "
        "(model.num_hidden=0): set model.num_hidden to 1 or more, or leave model.hidden_dim unset. Change the "
        "search space, or what it is combined with.",
    ),
    # 7. Records of another shape are no record of this program.
    "rerun-of-foreign-overrides": Refusal(
        ("--experimental-rerun", "out"),
        "Error: --experimental-rerun out: that is not the output directory of a run (its .hydra/overrides.yaml is "
        "no list of overrides, as this program saves them); give one such as outputs/DATE/TIME, or "
        "multirun/DATE/TIME/0 for a job.",
        setup=foreign_record,
    ),
    "foreign-sweep-record": Refusal(
        ("--multirun", "seed=1,2", "hydra.sweep.dir=sweep"),
        "Error: hydra.sweep.dir=sweep holds a multirun.yaml that is no record of a sweep of this program: choose "
        "another sweep directory.",
        setup=a_file("sweep/multirun.yaml", "[1, 2]"),
    ),
    # 8. Messages that name the cause.
    "pool-stride": Refusal(
        ("model=cnn", "model.kernel_size=1", "model.pool_stride=100"),
        "Error: model.pool_stride=100 shrinks 28x28 images to 1x1 in the first convolution block, too small for "
        "the second: use model.pool_stride=26 or less, or a larger dm.default_res.",
        in_process=True,
    ),
    "optimiser-without-weight-decay": Refusal(
        ("opt.optimizer_cls=torch.optim.LBFGS",),
        "Error: torch.optim.LBFGS cannot train with opt.lr=5e-05: LBFGS.step() missing 1 required positional "
        "argument: 'closure'",
        in_process=True,
    ),
    "label-map-to-no-label": Refusal(
        ("+dm.label_map={}",), "Error: dm.label_map={} maps to no label: a classifier needs two or more."
    ),
    # CPU threads.
    "threads": Refusal(
        ("threads=0",), "Error: threads=0 must be 1 or more, or null for this process's share of the cores."
    ),
    "threads-negative": Refusal(
        ("threads=-1",), "Error: threads=-1 must be 1 or more, or null for this process's share of the cores."
    ),
    "threads-not-a-number": Refusal(("threads=abc",), "Error merging override threads=abc"),
    "omp-num-threads-zero": Refusal(
        TINY,
        "Error: OMP_NUM_THREADS=0 is not a number of threads: set it to 1 or more, or unset it for this process's "
        "share of the cores.",
        in_process=True,
        env={"OMP_NUM_THREADS": "0"},
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
