"""Any conveyor.toml, read through the CLI as a user's commands read it (`conveyor queues list`,
`conveyor worker`): the command runs, or it stops with one error line and exit code 1; never a
traceback, and a refused file creates no queue."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import sys
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

import conveyor
from conveyor.cli import app as cli_app

QUEUE_KEYS = ["name", "delivery_delay", "retention_seconds"]
CONSUMER_KEYS = [
    "queue", "handler", "max_batch_size", "max_batch_timeout", "max_retries", "retry_delay",
    "dead_letter_queue", "max_concurrency", "visibility_timeout",
]  # fmt: skip
scalars = (
    st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats()  # nan and inf included: TOML has them
    | st.booleans()
    | st.text(max_size=12)
    | st.sampled_from(["jobs", "jobs-dlq", "bad name", "no_such_module_x:handle", "nope", "", "1s", "30"])
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=2),
)


def section(keys: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    return st.dictionaries(st.sampled_from(keys) | st.text(max_size=8), values, max_size=5)


def plausible(folder: Path) -> st.SearchStrategy[dict[str, Any]]:
    """Files close to valid ones, so the loading goes past the first check."""
    names = st.sampled_from(["jobs", "jobs-dlq", "other", "bad name"])
    number = st.integers(min_value=-5, max_value=200_000) | st.floats(min_value=-1, max_value=2e6)
    queue = st.fixed_dictionaries(
        {"name": names}, optional={"delivery_delay": number, "retention_seconds": number}
    )
    consumer = st.fixed_dictionaries(
        {"queue": names, "handler": st.sampled_from(["no_such_module_x:handle", "bad"])},
        optional={key: number | names for key in CONSUMER_KEYS[2:]},
    )
    return st.fixed_dictionaries(
        {"url": st.just(f"sqlite:///{folder / 'fuzz.db'}")},
        optional={"queues": st.lists(queue, max_size=3), "consumers": st.lists(consumer, max_size=2)},
    )


def documents(folder: Path) -> st.SearchStrategy[dict[str, Any]]:
    # a URL is only ever a local one: a fuzzed file must not send the CLI onto the network
    urls = (
        st.sampled_from([f"sqlite:///{folder / 'fuzz.db'}", "memory://", "nope://x", "", "sqlite://"])
        | values
    )
    return st.fixed_dictionaries(
        {},
        optional={
            "url": urls,
            "app": st.sampled_from(["no_such_module_x:app", "x", ""]) | values,
            "queues": st.lists(section(QUEUE_KEYS), max_size=3) | values,
            "consumers": st.lists(section(CONSUMER_KEYS), max_size=3) | values,
            "unknown": values,
        },
    )


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return (
            "nan"
            if math.isnan(value)
            else ("inf" if value > 0 else "-inf")
            if math.isinf(value)
            else repr(value)
        )
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)  # a basic string: \uXXXX escapes (a lone surrogate makes it invalid TOML)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    return "{" + ", ".join(f"{json.dumps(key)} = {toml_value(item)}" for key, item in value.items()) + "}"


def toml(document: dict[str, Any]) -> str:
    lines = []
    tables = {key: value for key, value in document.items() if _is_table_list(value)}
    for key, value in document.items():
        if key not in tables:
            lines.append(f"{json.dumps(key)} = {toml_value(value)}")
    for key, rows in tables.items():
        for row in rows:
            lines.append(f"[[{key}]]")
            lines.extend(f"{json.dumps(name)} = {toml_value(item)}" for name, item in row.items())
    return "\n".join(lines) + "\n"


def _is_table_list(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(row, dict) for row in value)


def run(folder: Path, *args: str) -> Any:
    # the worker puts folders on sys.path and sets the conveyor logger's level: undo both
    path, logger = list(sys.path), logging.getLogger("conveyor")
    level = logger.level
    try:
        arguments = ["--config", str(folder / "conveyor.toml"), *args]
        return CliRunner().invoke(cli_app, arguments, env={"COLUMNS": "200"})
    finally:
        sys.path[:] = path
        logger.setLevel(level)


def assert_ran_or_one_error_line(result: Any) -> None:
    assert result.exit_code in (0, 1), (result.exit_code, result.output, result.exception)
    assert "Traceback" not in result.output
    if result.exit_code == 1:
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr


def queues_in(folder: Path) -> list[str]:
    import asyncio

    database = folder / "fuzz.db"
    if not database.exists():
        return []

    async def names() -> list[str]:
        async with conveyor.App(f"sqlite:///{database}") as app:
            return [info.name for info in await app.list_queues()]

    return asyncio.run(names())


FOLDER = Path(tempfile.gettempdir())  # only to build the strategy; each example has its own folder


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_any_conveyor_toml_is_loaded_or_refused_in_one_line(data: st.DataObject) -> None:
    # in the example's folder: a file without a url must not leave conveyor.db in the repository
    with tempfile.TemporaryDirectory() as name, contextlib.chdir(name):
        folder = Path(name)
        files = (documents(folder) | plausible(folder)).map(toml) | st.text(max_size=80)
        text = data.draw(files, label="conveyor.toml")
        (folder / "conveyor.toml").write_text(text, encoding="utf-8", errors="surrogatepass")
        listed = run(folder, "queues", "list")
        event(f"queues list: exit code {listed.exit_code}")
        assert_ran_or_one_error_line(listed)
        worker = run(folder, "worker")  # every handler module is one that does not exist: it stops
        assert_ran_or_one_error_line(worker)
        assert worker.exit_code == 1
        if listed.exit_code == 1:
            assert queues_in(folder) == []
