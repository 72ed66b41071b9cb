"""Real worker processes: a SIGKILL loses nothing; a SIGTERM drains in-flight batches and releases
the rest at once. SQLite, because it is the engine that several processes share on one machine."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

import conveyor
from conveyor.consumer import runner
from tests.support.polling import eventually

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
# A stuck worker is killed after this long, so a failing test still ends.
PROCESS_TIMEOUT_SECONDS = 60


class WorkerProcess:
    def __init__(self, url: str, log: Path, handler_seconds: float) -> None:
        env = {
            **os.environ,
            "CONVEYOR_URL": url,
            "WORKER_LOG": str(log),
            "WORKER_HANDLER_SECONDS": str(handler_seconds),
        }
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.consumer.worker_app"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )

    def stop(self, signum: int) -> int:
        self.process.send_signal(signum)
        try:
            return self.process.wait(timeout=PROCESS_TIMEOUT_SECONDS)
        finally:
            self.cleanup()

    def cleanup(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()

    def stderr(self) -> str:
        assert self.process.stderr is not None
        return self.process.stderr.read().decode(errors="replace") if self.process.poll() is not None else ""


@pytest.fixture
def workers() -> Iterator[list[WorkerProcess]]:
    started: list[WorkerProcess] = []
    yield started
    for worker in started:
        worker.cleanup()


def read_log(log: Path) -> list[tuple[str, str, int]]:
    if not log.exists():
        return []
    entries = []
    for line in log.read_text().splitlines():
        kind, message_id, attempts = line.split()
        entries.append((kind, message_id, int(attempts)))
    return entries


async def test_sigkill_mid_batch_loses_nothing(tmp_path: Path, workers: list[WorkerProcess]) -> None:
    url = f"sqlite:///{tmp_path / 'queue.db'}"
    log = tmp_path / "handled.log"
    async with conveyor.App(url) as app:
        queue = app.queue("jobs")
        sent: set[str] = set()
        for start in range(0, 3000, 100):
            sent.update(await queue.send_batch([{"n": n} for n in range(start, start + 100)]))

        first = WorkerProcess(url, log, handler_seconds=0.05)
        workers.append(first)

        async def busy() -> bool:
            return len([e for e in read_log(log) if e[0] == "done"]) >= 500

        await eventually(busy, "the first worker handled 500 messages", PROCESS_TIMEOUT_SECONDS)
        assert first.stop(signal.SIGKILL) == -signal.SIGKILL
        after_kill = await queue.stats()
        assert after_kill.in_flight > 0, "the kill should leave leased messages behind"
        assert after_kill.total < 3000

        second = WorkerProcess(url, log, handler_seconds=0)
        workers.append(second)

        async def drained() -> bool:
            return (await queue.stats()).total == 0

        await eventually(drained, "the second worker drained the queue", PROCESS_TIMEOUT_SECONDS)
        assert second.stop(signal.SIGTERM) == 0, second.stderr()

    entries = read_log(log)
    done = [(message_id, attempts) for kind, message_id, attempts in entries if kind == "done"]
    assert {message_id for message_id, _ in done} == sent  # every message was handled
    # a second handling is only ever a redelivery of a lease the killed worker held
    assert len(set(done)) == len(done), "one delivery was handled twice"
    handled_twice = [message_id for message_id, count in Counter(m for m, _ in done).items() if count > 1]
    redelivered = {message_id for message_id, attempts in done if attempts > 1}
    assert set(handled_twice) <= redelivered
    # at most what the dead worker held (worker_app: batches of 50, 4 at a time): 4 batches running
    # or collecting, plus one lease's worth taken ahead (its batches waiting for a slot) or settling
    assert len(redelivered) <= 4 * 50 + runner.lease_ahead_size(50)


async def test_sigterm_finishes_batches_in_flight_and_releases_the_rest(
    tmp_path: Path, workers: list[WorkerProcess]
) -> None:
    url = f"sqlite:///{tmp_path / 'queue.db'}"
    log = tmp_path / "handled.log"
    async with conveyor.App(url) as app:
        queue = app.queue("jobs")
        for start in range(0, 1000, 100):
            await queue.send_batch([{"n": n} for n in range(start, start + 100)])
        worker = WorkerProcess(url, log, handler_seconds=1.0)
        workers.append(worker)

        async def started() -> bool:
            return any(kind == "start" for kind, _, _ in read_log(log))

        await eventually(started, "the worker started a batch", PROCESS_TIMEOUT_SECONDS)
        assert worker.stop(signal.SIGTERM) == 0, worker.stderr()
        stats = await queue.stats()
        left = await queue.peek(1000)

    entries = read_log(log)
    started_ids = {message_id for kind, message_id, _ in entries if kind == "start"}
    done_ids = {message_id for kind, message_id, _ in entries if kind == "done"}
    assert started_ids and started_ids == done_ids  # every batch in flight finished
    assert stats.in_flight == 0  # the rest went back at once, not after their lease
    assert stats.backlog == 1000 - len(done_ids)
    assert {message.attempts for message in left} == {0}  # released as if never delivered
