"""The documents' recipes, followed as a new user would: their code is added to a copy of the project, which
then passes the linters and the type checker, offers the new options in `--help`, and trains with them."""

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.documents import DOCUMENTS, Example, assert_contains_in_order, blocks, examples, run_main
from tests.helpers import REAL_MNIST, REPO

RECIPE_RUNS = [example for example in examples() if example.recipe]
RECIPE_FIGURES = [example for example in RECIPE_RUNS if example.shows_figures]
# `cs.store(group="model", name="strided_cnn", ...)` in a recipe registers the option model=strided_cnn.
REGISTRATION = re.compile(r'cs\.store\(group="(\w+)", name="(\w+)"')


def apply_edit(text: str, edit: str) -> str:
    """Apply a recipe's edit to a file's `text`, as its reader would. A line of the edit that the file has
    places the new lines after it; a line `from X import ...` replaces the file's import from X, or, where
    there is none, joins the project's imports (`from src...`) in sorted order; `...` stands for lines
    left out."""
    lines = text.splitlines()
    position: int | None = None  # where the next new line goes
    for line in edit.splitlines():
        module = line.split(" import ")[0] + " import " if line.startswith("from ") else ""
        same_module = [i for i, old in enumerate(lines) if module and old.startswith(module)]
        if line.strip() == "...":
            position = None
        elif line in lines or same_module:
            index = lines.index(line) if line in lines else same_module[0]
            lines[index], position = line, index + 1
        elif line.startswith("from src."):
            ours = [i for i, old in enumerate(lines) if old.startswith("from src.")]
            position = next((i for i in ours if lines[i] > line), ours[-1] + 1)
            lines.insert(position, line)
            position += 1
        else:
            assert position is not None, f"no line of the file shows where {line!r} goes"
            lines.insert(position, line)
            position += 1
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the project with every recipe of the documents applied."""
    copy = tmp_path_factory.mktemp("project")
    for name in ("main.py", "src", "conf", "pyproject.toml"):
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, copy / name)
        else:
            shutil.copy(source, copy / name)
    (copy / ".venv").symlink_to(REPO / ".venv")  # for pyright, as pyproject.toml configures it
    for document in DOCUMENTS:
        for block in blocks(document):
            action, _, path = block.recipe.rpartition(" ")
            if action == "create":
                assert not (copy / path).exists(), f"{document.name}: {path} exists already"
                (copy / path).write_text(block.body)
            elif action == "append to":
                (copy / path).write_text((copy / path).read_text() + "\n\n" + block.body)
            elif action == "edit":
                (copy / path).write_text(apply_edit((copy / path).read_text(), block.body))
            else:
                assert block.recipe in ("", "run"), f"{document.name}: unknown recipe {block.recipe!r}"
    return copy


def _original(path: Path, project: Path) -> bytes:
    original = REPO / path.relative_to(project)
    return original.read_bytes() if original.exists() else b""


def registered_options() -> list[tuple[str, str]]:
    return [
        match
        for document in DOCUMENTS
        for block in blocks(document)
        if block.recipe.startswith("edit ")
        for match in REGISTRATION.findall(block.body)
    ]


def test_the_documents_have_recipes() -> None:
    assert {group for group, _ in registered_options()} == {"model", "dm"}
    assert len(RECIPE_RUNS) >= 2


@pytest.mark.slow
def test_the_code_of_the_recipes_passes_the_linters_and_the_type_checker(project: Path) -> None:
    changed = [str(path) for path in (project / "src").rglob("*.py") if path.read_bytes() != _original(path, project)]
    assert len(changed) >= 3  # the model, the data module and their registration
    for command in (["ruff", "check", *changed], ["ruff", "format", "--check", *changed], ["pyright", *changed]):
        result = subprocess.run(
            [str(REPO / ".venv" / "bin" / command[0]), *command[1:]],
            cwd=project,
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.slow
def test_help_offers_the_new_options(project: Path, tmp_path: Path, mnist_root: Path) -> None:
    result = run_main("python main.py --help", project=project, cwd=tmp_path, data_root=mnist_root)
    assert result.returncode == 0, result.stderr
    groups = dict(line.split(": ", 1) for line in result.stdout.splitlines() if line.startswith(("dm: ", "model: ")))
    for group, name in registered_options():
        assert name in groups[group].split(", "), result.stdout


@pytest.mark.slow
@pytest.mark.parametrize("example", RECIPE_RUNS, ids=[example.command for example in RECIPE_RUNS])
def test_the_recipe_trains(example: Example, project: Path, tmp_path: Path, mnist_root: Path) -> None:
    if example.shows_figures and REAL_MNIST.is_dir():
        pytest.skip("it shows figures: test_the_recipe_gives_the_figures_shown runs it on real MNIST")
    train_and_compare(example, project, tmp_path, mnist_root, figures=False)


@pytest.mark.slow
@pytest.mark.parametrize("example", RECIPE_FIGURES, ids=[example.command for example in RECIPE_FIGURES])
def test_the_recipe_gives_the_figures_shown(
    example: Example, project: Path, tmp_path: Path, real_mnist_root: Path
) -> None:
    train_and_compare(example, project, tmp_path, real_mnist_root, figures=True)


def train_and_compare(example: Example, project: Path, tmp_path: Path, data_root: Path, *, figures: bool) -> None:
    run_dir = tmp_path / "out"
    result = run_main(
        example.command, project=project, cwd=tmp_path, data_root=data_root, extra_args=(f"hydra.run.dir={run_dir}",)
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "warning" not in output.lower(), output
    assert "Model architecture:" in output
    for expected in example.expected_outputs:
        assert_contains_in_order(output, expected, figures=figures)
    assert json.loads((run_dir / "metrics.json").read_text())["status"] == "finished"
