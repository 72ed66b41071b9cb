"""Workers seen recently: a real `conveyor worker` process writes its heartbeat, which
`conveyor workers` (table and --json) and `GET /workers` list with its host, pid, queues and
concurrency; stopped by SIGTERM, it deletes its heartbeat."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import conveyor
from tests.http.conftest import client_for, result

WAIT_SECONDS = 30.0

HANDLERS = """
async def handle(batch, env):
    pass
"""


def conveyor_json(cwd: Path, env: dict[str, str], *args: str) -> Any:
    done = subprocess.run(
        [sys.executable, "-m", "conveyor", "--json", *args], cwd=cwd, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


async def workers_from_the_api(url: str) -> Any:
    async with conveyor.App(url, auto_create=False) as app, client_for(app) as client:
        return result(await client.get("/workers"))


@pytest.mark.slow
def test_a_running_worker_is_listed_with_its_host_pid_queues_and_concurrency(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'workers.db'}"
    (tmp_path / "jobs_handlers.py").write_text(HANDLERS)
    (tmp_path / "conveyor.toml").write_text(
        f'url = "{url}"\n'
        '[[consumers]]\nqueue = "jobs"\nhandler = "jobs_handlers:handle"\nmax_concurrency = 4\n'
        '[[consumers]]\nqueue = "emails"\nhandler = "jobs_handlers:handle"\nmax_concurrency = 2\n'
    )
    env = {key: value for key, value in os.environ.items() if not key.startswith("CONVEYOR_")}
    assert conveyor_json(tmp_path, env, "workers") == []
    with (tmp_path / "worker.err").open("w") as errors:
        worker = subprocess.Popen(
            [sys.executable, "-m", "conveyor", "worker"],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=errors,
        )
    try:
        deadline = time.monotonic() + WAIT_SECONDS
        while not (listed := conveyor_json(tmp_path, env, "workers")):
            assert worker.poll() is None and time.monotonic() < deadline, (
                tmp_path / "worker.err"
            ).read_text()
            time.sleep(0.1)  # another process writes the heartbeat: polling is the only way to see it
        (seen,) = listed
        assert (seen["host"], seen["pid"]) == (socket.gethostname(), worker.pid)
        assert (seen["queues"], seen["concurrency"]) == (["emails", "jobs"], 6)
        assert seen["id"].startswith(f"{socket.gethostname()}:{worker.pid}:")
        assert 0 <= seen["last_heartbeat_seconds_ago"] <= 15

        table = subprocess.run(
            [sys.executable, "-m", "conveyor", "workers"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
        ).stdout
        assert str(worker.pid) in table and "emails, jobs" in table

        (from_api,) = asyncio.run(workers_from_the_api(url))
        assert (from_api["id"], from_api["pid"], from_api["queues"]) == (
            seen["id"],
            worker.pid,
            ["emails", "jobs"],
        )
    finally:
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=WAIT_SECONDS) == 0
    # stopped gracefully: it deleted its heartbeat
    assert conveyor_json(tmp_path, env, "workers") == []
