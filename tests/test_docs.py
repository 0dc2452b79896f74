"""README.md and docs/*.md are tested documents: every command in them runs, and prints what they show."""

import re
import shlex
import subprocess
from pathlib import Path

import pytest

from tests.documents import (
    DOCUMENTS,
    Block,
    Example,
    assert_contains,
    assert_contains_in_order,
    blocks,
    examples,
    run_main,
)
from tests.helpers import REAL_MNIST, REPO, program_env

# Commands the test does not run, and why.
NOT_RUN = {
    "make test": "it is the command that runs this test",
    "pip install -r requirements.lock": "it installs into the active environment; `make test` installed the same pins",
    "python main.py wandb.mode=online": "it needs a W&B account and the network (tests/test_wandb.py tests its errors)",
    "python main.py --multirun seed=42,43 hydra/launcher=slurm/kyiv": "tests/test_slurm.py runs it on a SLURM cluster",
    "python main.py --experimental-rerun outputs/long_run": "it continues an earlier run (tests/test_checkpoint.py)",
    "python main.py --multirun seed=42,43 hydra.sweep.dir=multirun/2026-11-28/00-03-10": (
        "it continues a stopped sweep; tests/test_sweeps.py kills one and runs the command it printed"
    ),
    "scripts/gpu-wheels.sh": "it downloads wheels from PyPI into .whl/; gpu-check.sh runs here without them",
    "python scripts/reproduce.py outputs/2026-12-07/20-14-03": (
        "it reproduces an earlier run; tests/test_identity.py runs it on a run it makes"
    ),
    "scancel --signal=USR2 JOB_ID": "it needs a running SLURM job; tests/test_slurm.py sends it to one",
    "nohup python main.py --multirun seed=42,43 hydra/launcher=slurm/kyiv > sweep.log 2>&1 &": (
        "it outlives the test in the background; tests/test_slurm.py runs the same sweep"
    ),
    "python main.py --multirun hydra/launcher=slurm/kyiv hydra.launcher.tasks_per_node=4 hydra.launcher.gres=gpu:4": (
        "it needs a node with four GPUs; tests/test_distributed.py runs two tasks a job on the local SLURM cluster"
    ),
    "python main.py --multirun hydra/launcher=slurm/kyiv hydra.launcher.nodes=2 hydra.launcher.tasks_per_node=4 "
    "hydra.launcher.gres=gpu:4": "it needs two nodes with four GPUs; tests/test_distributed.py runs a job on two nodes",
    "python main.py --multirun hydra/launcher=submitit_local hydra.launcher.tasks_per_node=2": (
        "its tasks import `src` from the directory they start in, which is the repository's root only where users "
        "run it; tests/test_distributed.py runs it with the repository on PYTHONPATH"
    ),
}
# Commands that stop with an error, which the documents show.
FAILING = {
    "python main.py model=cnn model.hidden_dim=10",
    "python main.py dm.digits=MNIST dm.root=nowhere dm.download=false",
    "python main.py dm=celeba dm.superclass=BEARD",
    "python main.py opt.optimizer_cls=os.system",
    "python main.py hydra.run.dir=/proc/out",
    "python main.py model=transformer",
    "python main.py --multirun seed=1,2 wandb.mode=offline wandb.id=fixedid",
    "python main.py +hydra.callbacks.mine._target_=os.system",
    "python main.py +hydra.job.env_set.WANDB_API_KEY=not-a-real-key",
    "python main.py \"dm.root='~no_such_user/data'\"",
    "python main.py --multirun hydra/sweeper=fcn_params model.num_hidden='choice(0)' model.hidden_dim=16",
}
# Overrides added to a command to keep the test short.
SHORTER = {
    "python main.py --multirun hydra/sweeper=fcn_params": ("hydra.sweeper.n_trials=3",),
    "python main.py --multirun hydra/sweeper=fcn_params hydra/sweeper/pruner=median "
    "hydra.sweeper.pruner.n_startup_trials=2 hydra.sweeper.study_name=fcn_pruned opt.epochs=4": (
        "hydra.sweeper.n_trials=3",
    ),
}

EXAMPLES = examples()
RUN_HERE = [example for example in EXAMPLES if not example.recipe]  # recipes run in tests/test_recipes.py
WITH_FIGURES = [example for example in RUN_HERE if example.shows_figures and example.command not in NOT_RUN]


def test_the_documents_have_commands_and_outputs() -> None:
    assert len(DOCUMENTS) > 1, "docs/*.md are missing"
    assert len(EXAMPLES) > 20
    assert sum(bool(example.expected_outputs) for example in EXAMPLES) > 10
    for document in DOCUMENTS:
        assert any(str(document.relative_to(REPO)) in example.documents for example in EXAMPLES), document
    commands = {example.command for example in EXAMPLES}
    for listed in (NOT_RUN, FAILING, SHORTER):
        assert set(listed) <= commands, f"names a command that no document has: {set(listed) - commands}"


def anchors(document: Path) -> set[str]:
    """The anchors that GitHub gives the headings of a document: lowercase, punctuation dropped, spaces as -."""
    headings = re.findall(r"^#+ (.+)$", re.sub(r"^```.*?^```", "", document.read_text(), flags=re.M | re.S), re.M)
    return {re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-") for heading in headings}


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda document: document.name)
def test_links_between_the_documents_lead_somewhere(document: Path) -> None:
    for target, anchor in re.findall(r"\]\((?!https?:)([^)#]*)#?([^)]*)\)", document.read_text()):
        path = (document.parent / target).resolve() if target else document
        assert path.exists(), f"{document.name}: no such file: {target}"
        if anchor:
            assert anchor in anchors(path), f"{document.name}: no heading #{anchor} in {path.name}"


@pytest.mark.parametrize(
    ("document", "excerpt"),
    [(document, block) for document in DOCUMENTS for block in blocks(document) if block.excerpt],
    ids=lambda value: value.name if isinstance(value, Path) else value.excerpt,
)
def test_excerpt_shows_lines_of_the_file(document: Path, excerpt: Block) -> None:
    """A file shown in a document is shown as it is: its lines, in its order, some left out."""
    lines = iter((REPO / excerpt.excerpt).read_text().splitlines())
    for line in excerpt.body.splitlines():
        if line.strip() and line.strip() != "...":
            assert any(line == actual for actual in lines), f"{document.name}: not in {excerpt.excerpt}: {line!r}"


@pytest.mark.slow
@pytest.mark.parametrize("example", RUN_HERE, ids=[example.command for example in RUN_HERE])
def test_command(example: Example, mnist_root: Path, tmp_path: Path) -> None:
    if example.command in NOT_RUN:
        pytest.skip(NOT_RUN[example.command])
    if example.shows_figures and REAL_MNIST.is_dir():
        pytest.skip("it shows figures: test_figures runs it on real MNIST")
    run_and_compare(example, mnist_root, tmp_path, figures=False)


@pytest.mark.slow
@pytest.mark.parametrize("example", WITH_FIGURES, ids=[example.command for example in WITH_FIGURES])
def test_figures(example: Example, real_mnist_root: Path, tmp_path: Path) -> None:
    """The figures that the documents show are what the command prints on real MNIST, digit for digit (on a
    CPU a run is deterministic)."""
    run_and_compare(example, real_mnist_root, tmp_path, figures=True)


def run_and_compare(example: Example, data_root: Path, tmp_path: Path, *, figures: bool) -> None:
    """Run the example's command on the data in `data_root`, and compare what it prints with the documents."""
    env = program_env(data_root)
    words = shlex.split(example.command)
    if example.command == "make run":
        argv = [*words, f"ARGS=hydra.run.dir={tmp_path / 'out'}"]
        result = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=600, check=False)
    elif words[0].startswith(("scripts/", ".venv/bin/")):
        # A developer's command, given from the repository root; the scripts find the root themselves, so
        # they run here in tmp_path, where their output goes.
        argv, cwd = [str(REPO / words[0]), *words[1:]], tmp_path if words[0].startswith("scripts/") else REPO
        result = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=600, check=False)
    else:
        shorter = SHORTER.get(example.command, ())
        result = run_main(example.command, project=REPO, cwd=tmp_path, data_root=data_root, extra_args=shorter)
    output = result.stdout + result.stderr
    if example.command in FAILING:
        assert result.returncode != 0, output
        assert "Traceback" not in output
    else:
        assert result.returncode == 0, output
        # A warning from Hydra or torch (deprecation), or from the program (`WARNING: ...`), is a defect.
        assert "warning" not in output.lower(), output
    for expected in example.expected_outputs:
        if figures or not example.shows_figures:
            assert_contains_in_order(output, expected, figures=figures)
        else:  # on synthetic digits, not the figures' MNIST: rankings differ
            assert_contains(output, expected)
