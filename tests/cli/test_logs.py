"""`--log-format json`: every stderr line of `conveyor worker` and `conveyor serve` is one JSON
object, with the queue, message id, attempt and outcome where the log call knows them."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

import conveyor
from conveyor.cli.logs import JsonFormatter
from tests.cli.test_serve import wait_for_address

WAIT_SECONDS = 30.0

FAILING_HANDLER = """
async def handle(batch, env):
    raise RuntimeError("the payment service is down")
"""


def json_lines(path: Path) -> list[dict[str, Any]]:
    """Every line of `path`, each of which must be a JSON object."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_a_record_is_one_json_line_with_its_context_and_traceback() -> None:
    try:
        raise ValueError("bad\nbody")
    except ValueError:
        record = logging.LogRecord(
            "conveyor.consumer", logging.ERROR, __file__, 1, "handler %s failed", ("h",), sys.exc_info()
        )
    record.__dict__.update(queue="jobs", message_id="m-1", attempt=2, outcome="handler_failed", secret="x")
    line = JsonFormatter().format(record)
    assert "\n" not in line
    document = json.loads(line)
    assert document["message"] == "handler h failed"
    assert (document["level"], document["logger"]) == ("error", "conveyor.consumer")
    assert (document["queue"], document["message_id"], document["attempt"]) == ("jobs", "m-1", 2)
    assert document["outcome"] == "handler_failed"
    assert "ValueError: bad\nbody" in document["traceback"]
    assert "secret" not in document  # only the named context fields
    assert document["time"].endswith("+00:00")


def env_without_conveyor() -> dict[str, str]:
    return {key: value for key, value in os.environ.items() if not key.startswith("CONVEYOR_")}


async def send_one(url: str) -> str:
    async with conveyor.App(url) as app:
        await app.create_queue("jobs")
        return await app.queue("jobs").send({"n": 1})


@pytest.mark.slow
def test_worker_logs_a_dead_letter_as_json_with_queue_id_attempt_and_outcome(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'worker.db'}"
    message_id = asyncio.run(send_one(url))
    (tmp_path / "failing.py").write_text(FAILING_HANDLER)
    (tmp_path / "conveyor.toml").write_text(
        f'url = "{url}"\n[[consumers]]\nqueue = "jobs"\nhandler = "failing:handle"\n'
        'max_retries = 0\nmax_batch_timeout = 0.1\ndead_letter_queue = "jobs-dlq"\n'
    )
    log = tmp_path / "worker.err"
    with log.open("w") as errors:
        worker = subprocess.Popen(
            [sys.executable, "-m", "conveyor", "worker", "--log-format", "json"],
            cwd=tmp_path,
            env=env_without_conveyor(),
            stdout=subprocess.DEVNULL,
            stderr=errors,
        )
    try:
        deadline = time.monotonic() + WAIT_SECONDS
        while not any(line.get("outcome") == "dead_letter" for line in json_lines(log)):
            assert worker.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)  # another process writes the log: polling is the only way to see it
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(WAIT_SECONDS) == 0
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    lines = json_lines(log)
    dead = next(line for line in lines if line.get("outcome") == "dead_letter")
    assert (dead["queue"], dead["message_id"], dead["attempt"]) == ("jobs", message_id, 1)
    assert dead["level"] == "warning" and "the payment service is down" in dead["message"]
    failures = [line for line in lines if line.get("outcome") == "handler_failed"]
    assert len(failures) == 1 and "RuntimeError: the payment service is down" in failures[0]["traceback"]


@pytest.mark.slow
def test_serve_logs_json_lines(tmp_path: Path) -> None:
    log = tmp_path / "serve.err"
    command = [sys.executable, "-m", "conveyor", "--url", f"sqlite:///{tmp_path / 's.db'}", "serve"]
    command += ["--port", "0", "--log-format", "json", "--access-log"]
    with log.open("w") as errors:
        server = subprocess.Popen(
            command,
            cwd=tmp_path,
            env=env_without_conveyor(),
            stdout=subprocess.DEVNULL,
            stderr=errors,
            text=True,
        )
    try:
        address = wait_for_address(log, server)
        with httpx.Client(base_url=address, timeout=WAIT_SECONDS) as client:
            assert client.get("/queues").status_code == 200
        server.send_signal(signal.SIGTERM)
        assert server.wait(WAIT_SECONDS) == 0
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    lines = json_lines(log)
    assert any(line["logger"] == "conveyor.serve" and "listening on" in line["message"] for line in lines)
    assert any(
        line["logger"] == "conveyor.http.access" and "GET /queues 200" in line["message"] for line in lines
    )
