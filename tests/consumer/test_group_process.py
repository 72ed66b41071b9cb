"""Ordered message groups across a SIGKILLed worker process, on every engine processes can share,
in a queue of one partition and of four: each group's messages are handled in send order and one
at a time, before and after the kill; a head the dead worker held comes back (same message, not
the next) once its lease expires."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import conveyor
from tests.reliability.conftest import skip_memory
from tests.support.engines import EngineSetup
from tests.support.polling import eventually

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
PROCESS_TIMEOUT_SECONDS = 60
GROUPS, PER_GROUP = 4, 15


def start_worker(url: str, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "CONVEYOR_URL": url, "WORKER_LOG": str(log)}
    return subprocess.Popen(
        [sys.executable, "-m", "tests.consumer.group_worker_app"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


@pytest.fixture
def workers() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait()
        if process.stderr is not None:
            process.stderr.close()


def read_log(log: Path) -> list[tuple[str, str, int]]:
    if not log.exists():
        return []
    entries = []
    for line in log.read_text().splitlines():
        kind, group, n, _ = line.split()
        entries.append((kind, group, int(n)))
    return entries


@pytest.mark.parametrize("partitions", [1, 4])
async def test_groups_keep_their_order_across_a_sigkilled_worker(
    engine: EngineSetup, url: str, tmp_path: Path, workers: list[subprocess.Popen[bytes]], partitions: int
) -> None:
    skip_memory(engine)
    log = tmp_path / "handled.log"
    async with conveyor.App(url) as app:
        await app.create_queue("jobs", partitions=partitions)  # 4: the groups spread over partitions
        queue = app.queue("jobs")
        for n in range(PER_GROUP):
            await queue.send_batch([conveyor.SendRequest({"n": n}, group=f"g{g}") for g in range(GROUPS)])
        first = start_worker(url, log)
        workers.append(first)

        async def busy() -> bool:
            return len([e for e in read_log(log) if e[0] == "done"]) >= 20

        await eventually(busy, "the first worker handled 20 messages", PROCESS_TIMEOUT_SECONDS)
        first.send_signal(signal.SIGKILL)
        assert first.wait(timeout=PROCESS_TIMEOUT_SECONDS) == -signal.SIGKILL
        workers.append(start_worker(url, log))

        async def drained() -> bool:
            return (await queue.stats()).total == 0

        await eventually(drained, "the second worker drained the queue", PROCESS_TIMEOUT_SECONDS)

    for g in range(GROUPS):
        events = [(kind, n) for kind, group, n in read_log(log) if group == f"g{g}"]
        handling: int | None = None  # the message of the group a handler has started
        done: list[int] = []
        for kind, n in events:
            if kind == "start":
                # one at a time: only the head the dead worker held starts again before its done
                assert handling is None or handling == n, (g, events)
                handling = n
            else:
                assert handling == n, (g, events)
                handling = None
                if not done or done[-1] != n:  # a head handled, then killed before its ack: again
                    done.append(n)
        assert done == list(range(PER_GROUP)), (g, events)
