"""README.md and docs/*.md are tested documents: their commands, the output they show, and their recipes.

A `bash` block holds commands, one a line; a `text` block right after it is their output: lines that
the output contains, in this order, once times, dates and measured numbers are blurred. A block right
after a comment `<!-- excerpt: PATH -->` shows lines of that file, in its order (`...` for lines left out);
one after `<!-- recipe: ... -->` is code that tests/test_recipes.py adds to a copy of the project."""

import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from tests.helpers import REPO, program_env

DOCUMENTS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
# A metric as the program prints it, to four places: a figure measured on real MNIST.
FIGURE = re.compile(r"\b\d\.\d{4}\b")
# A fenced block, and the comment right before it (`<!-- excerpt: ... -->`, `<!-- recipe: ... -->`) if any.
BLOCK = re.compile(r"(?:^<!-- (\w+): (.+?) -->\n)?^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)


@dataclass(frozen=True)
class Block:
    language: str
    body: str
    excerpt: str  # the file whose lines it shows; "" if none
    recipe: str  # what to do with it, e.g. "append to src/model.py" or "run"; "" if none


@dataclass(frozen=True)
class Example:
    command: str
    # For each document that shows the command with output: the lines that the output contains, in order.
    expected_outputs: tuple[tuple[str, ...], ...]
    documents: tuple[str, ...]
    recipe: bool  # the command needs code that a recipe adds: tests/test_recipes.py runs it

    @property
    def shows_figures(self) -> bool:
        """Whether its output shows figures measured on real MNIST (metrics, as the program prints them)."""
        return any(FIGURE.search(line) for output in self.expected_outputs for line in output)


def blocks(document: Path) -> list[Block]:
    found = BLOCK.findall(document.read_text())
    for kind, _, _, _ in found:
        assert kind in ("", "excerpt", "recipe"), f"{document.name}: unknown comment <!-- {kind}: ... -->"
    return [
        Block(language, body, excerpt=what if kind == "excerpt" else "", recipe=what if kind == "recipe" else "")
        for kind, what, language, body in found
    ]


def examples() -> list[Example]:
    """Each command of a `bash` block in the documents, with the `text` block right after it as its output;
    a command shown in several places runs once, and must print each output shown."""
    found: dict[str, Example] = {}
    for document in DOCUMENTS:
        name = str(document.relative_to(REPO))
        document_blocks = blocks(document)
        for block, after in zip(document_blocks, [*document_blocks[1:], Block("", "", "", "")], strict=True):
            if block.language != "bash":
                continue
            expected = (tuple(after.body.splitlines()),) if after.language == "text" else ()
            for command in filter(str.strip, block.body.splitlines()):
                seen = found.get(command, Example(command, (), (), recipe=False))
                found[command] = Example(
                    command,
                    seen.expected_outputs + expected,
                    (*seen.documents, name),
                    recipe=seen.recipe or block.recipe == "run",
                )
    return list(found.values())


def normalise(line: str, *, figures: bool) -> str:
    """Blur what changes from run to run: times and dates, and, unless `figures` are compared, numbers."""
    line = re.sub(r"\d{4}-\d{2}-\d{2}[ /]\d{2}[:-]\d{2}[:-]\d{2}(,\d{3})?", "<time>", line)
    if not figures:
        line = re.sub(r"\d+\.\d+", "<number>", line)
    return " ".join(line.split())


def assert_contains_in_order(output: str, expected: tuple[str, ...], *, figures: bool = False) -> None:
    """The `expected` lines are among the output's, in this order; `figures`: with every number as shown."""
    remaining = iter(normalise(line, figures=figures) for line in output.splitlines())
    for line in expected:
        wanted = normalise(line, figures=figures)
        assert any(wanted == actual for actual in remaining), f"not printed (in this order): {line!r}\n{output}"


def assert_contains(output: str, expected: tuple[str, ...]) -> None:
    """The `expected` lines are among the output's, in any order, numbers blurred: for output on other data than
    the figures shown, where tables ranked by a metric come in another order."""
    printed = {normalise(line, figures=False) for line in output.splitlines()}
    for line in expected:
        assert normalise(line, figures=False) in printed, f"not printed: {line!r}\n{output}"


def run_main(
    command: str, *, project: Path, cwd: Path, data_root: Path, extra_args: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    """Run a `python main.py ...` command of the documents with `project`'s main.py, in `cwd`, on `data_root`."""
    words = shlex.split(command)
    assert words[:2] == ["python", "main.py"], f"no way to run {command!r}: add it to NOT_RUN with the reason"
    return subprocess.run(
        [sys.executable, str(project / "main.py"), *words[2:], *extra_args],
        cwd=cwd,
        env=program_env(data_root),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
