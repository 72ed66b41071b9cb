"""Documentation code cannot rot: every ```python block of README.md and docs/ runs here, each in a
fresh folder with no CONVEYOR_URL, and the `#>` lines under a `print` must be what it printed.

A block that cannot run here (it needs a server or a library conveyor does not depend on) has the
line `<!-- illustrative: not run by the tests -->` right above its fence (invisible on the site and
on GitHub); it is still compiled, and SKIPPED_AT_MOST keeps them few.
Blocks run with line numbers of their Markdown file, so a failure points at README.md or docs/.
"""

from __future__ import annotations

import ast
import builtins
import re
import sys
import textwrap
import types
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCUMENTS = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
# Illustrative blocks: the other libraries' side of the migration guides and PostgreSQL's outbox.
SKIPPED_AT_MOST = 8
# A snippet that waits longer is stuck (each takes well under a second when it works).
SNIPPET_TIMEOUT_SECONDS = 30

# A fenced block, also indented (inside a content tab); the info string's first word is the language.
FENCE = re.compile(r"^(?P<indent> *)```(?P<info>[^\n`]*)\n(?P<body>.*?)^(?P=indent)```[ \t]*$", re.M | re.S)
OUTPUT_PREFIX = "#>"
ILLUSTRATIVE = "<!-- illustrative: not run by the tests -->"


@dataclass(frozen=True)
class Snippet:
    path: Path
    line: int  # the Markdown line of the block's first line of code (1-based)
    source: str  # dedented
    illustrative: bool

    @property
    def name(self) -> str:
        return f"{self.path.relative_to(REPO)}:{self.line}"

    def compile(self) -> types.CodeType:
        # padded with empty lines so that line numbers are the Markdown file's; an illustrative
        # fragment may use `await` at the top level, as in an asyncio REPL
        padded = "\n" * (self.line - 1) + self.source
        flags = ast.PyCF_ALLOW_TOP_LEVEL_AWAIT if self.illustrative else 0
        code: types.CodeType = compile(padded, str(self.path), "exec", flags=flags, dont_inherit=True)
        return code

    def expected_output(self) -> dict[int, list[str]]:
        """The `#>` lines, keyed by the line of the code they follow."""
        expected: dict[int, list[str]] = {}
        code_line = 0
        for number, text in enumerate(self.source.splitlines(), start=self.line):
            stripped = text.strip()
            if stripped.startswith(OUTPUT_PREFIX):
                expected.setdefault(code_line, []).append(stripped[len(OUTPUT_PREFIX) :].strip())
            elif stripped:
                code_line = number
        return expected


def find_snippets(path: Path) -> Iterator[Snippet]:
    text = path.read_text()
    for match in FENCE.finditer(text):
        words = match["info"].split()
        if not words or words[0] not in ("python", "py"):
            continue
        first_line = text.count("\n", 0, match.start("body")) + 1
        line_above = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1].strip()
        yield Snippet(path, first_line, textwrap.dedent(match["body"]), line_above == ILLUSTRATIVE)


SNIPPETS = [snippet for path in DOCUMENTS for snippet in find_snippets(path)]


def print_call_ends(snippet: Snippet) -> dict[int, int]:
    """First line -> last line of every `print(...)` call, to key outputs of multi-line calls."""
    padded = "\n" * (snippet.line - 1) + snippet.source
    ends: dict[int, int] = {}
    for node in ast.walk(ast.parse(padded)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print":
            ends[node.lineno] = node.end_lineno or node.lineno
    return ends


class PrintRecorder:
    """Stands in for `print`: records what the snippet's own lines print, passes the rest through."""

    def __init__(self, snippet: Snippet) -> None:
        self.filename = str(snippet.path)
        self.ends = print_call_ends(snippet)
        self.printed: dict[int, list[str]] = {}
        self.real_print = builtins.print

    def __call__(self, *args: Any, sep: str | None = " ", end: str | None = "\n", **kwargs: Any) -> None:
        frame = sys._getframe(1)
        if frame.f_code.co_filename != self.filename or kwargs.get("file") is not None:
            self.real_print(*args, sep=sep, end=end, **kwargs)
            return
        text = (" " if sep is None else sep).join(str(arg) for arg in args)
        line = self.ends.get(frame.f_lineno, frame.f_lineno)
        self.printed.setdefault(line, []).extend(text.splitlines() or [""])


def test_the_documents_hold_examples_and_few_are_only_illustrative() -> None:
    assert len(SNIPPETS) >= 30
    skipped = [snippet.name for snippet in SNIPPETS if snippet.illustrative]
    assert len(skipped) <= SKIPPED_AT_MOST, skipped


@pytest.mark.timeout(SNIPPET_TIMEOUT_SECONDS)
@pytest.mark.parametrize("snippet", SNIPPETS, ids=lambda snippet: snippet.name)
def test_snippet(snippet: Snippet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    code = snippet.compile()  # an illustrative block must still be Python
    if snippet.illustrative:
        pytest.skip("illustrative: needs a server or another library")
    monkeypatch.chdir(tmp_path)  # files a snippet creates (conveyor.db, ...) land here
    for variable in ("CONVEYOR_URL", "CONVEYOR_CONFIG", "CONVEYOR_TOKEN"):
        monkeypatch.delenv(variable, raising=False)
    # run as a script: pydantic models and dataclasses defined in it find their module
    module = types.ModuleType("__main__")
    module.__file__ = str(snippet.path)
    monkeypatch.setitem(sys.modules, "__main__", module)
    recorder = PrintRecorder(snippet)
    monkeypatch.setattr(builtins, "print", recorder)
    exec(code, module.__dict__)
    monkeypatch.setattr(builtins, "print", recorder.real_print)
    assert recorder.printed == snippet.expected_output(), (
        f"{snippet.name}: the #> lines (right) differ from what the code printed (left), by line"
    )
