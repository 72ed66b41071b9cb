"""The pytest plugin, used the way a user uses it: the example test file of docs/testing.md, in a
project of its own, run by pytest in a subprocess with conveyor installed (the `pytest11` entry
point loads the plugin; nothing is configured)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Starting pytest and running three small tests takes a few seconds; this bounds a hang.
RUN_TIMEOUT_SECONDS = 120

A_FAILING_TEST = """

@pytest.mark.asyncio
async def test_that_must_fail(conveyor_app, conveyor_drain, conveyor_sent) -> None:
    register_consumers(conveyor_app)
    await conveyor_app.queue("signups").send({"email": "grace@example.com"})
    await conveyor_drain()
    assert await conveyor_sent("emails") == [{"to": "someone else"}]
"""


ON_SQLITE = """

def test_the_app_is_on_sqlite(conveyor_app) -> None:
    assert conveyor_app.url.startswith("sqlite:///")
"""


def docs_block(containing: str) -> str:
    """The one python block of docs/testing.md that holds `containing`."""
    text = (REPO / "docs" / "testing.md").read_text()
    blocks: list[str] = re.findall(r"^```python\n(.*?)^```", text, flags=re.M | re.S)
    [block] = [block for block in blocks if containing in block]
    return block


def run_pytest(folder: Path) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "error", "test_signups.py"],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_SECONDS,
    )
    return result.stdout + result.stderr


def test_the_documented_example_runs_with_plain_pytest_and_its_assertions_can_fail(tmp_path: Path) -> None:
    (tmp_path / "test_signups.py").write_text(docs_block("conveyor_sent") + A_FAILING_TEST)
    output = run_pytest(tmp_path)
    assert "1 failed, 2 passed" in output, output
    assert "FAILED test_signups.py::test_that_must_fail" in output
    assert "'grace@example.com'" in output  # what was really sent, in the failure's diff


def test_the_documented_conftest_runs_the_same_tests_on_sqlite(tmp_path: Path) -> None:
    (tmp_path / "test_signups.py").write_text(docs_block("conveyor_sent") + ON_SQLITE)
    (tmp_path / "conftest.py").write_text(docs_block("def conveyor_url"))
    output = run_pytest(tmp_path)
    assert "3 passed" in output, output


def test_the_plugin_is_registered_as_a_pytest11_entry_point() -> None:
    from importlib.metadata import entry_points

    [plugin] = [entry for entry in entry_points(group="pytest11") if entry.name == "conveyor"]
    assert plugin.value == "conveyor.pytest_plugin"
