"""A pull consumer's settings changed by another process (here `conveyor queues consumer http add`
and `remove`, the command line) reach a running process's pulls within PULL_CONSUMER_CACHE_SECONDS,
and a change made by the process itself at once (App.set_pull_consumer)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Awaitable
from pathlib import Path

import conveyor
from conveyor.limits import DEFAULT_PULL_BATCH_SIZE, PULL_CONSUMER_CACHE_SECONDS
from tests.support.polling import eventually


def conveyor_command(url: str, *args: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "conveyor", *args],
        env={"CONVEYOR_URL": url, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr


async def test_another_process_changing_the_pull_consumer_reaches_this_ones_pulls(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'queues.db'}"
    async with conveyor.App(url) as app:
        queue = app.queue("jobs")
        # enough for the polls below (each takes up to a batch, 50 times a second, for the
        # PULL_CONSUMER_CACHE_SECONDS a change takes to show)
        for start in range(0, 2_000, 100):
            await queue.send_batch(list(range(start, start + 100)))

        async def pulled_size() -> int:
            messages = await queue.pull()  # no batch size named: the consumer's, or the default
            await queue.ack([m.lease_id for m in messages])
            return len(messages)

        assert await pulled_size() == DEFAULT_PULL_BATCH_SIZE  # and "no consumer" is now cached
        conveyor_command(url, "queues", "consumer", "http", "add", "jobs", "--batch-size", "2")
        # at most PULL_CONSUMER_CACHE_SECONDS later: the other process's batch size
        await eventually(lambda: _is(pulled_size(), 2), "the pull to take the new batch size")
        conveyor_command(url, "queues", "consumer", "http", "remove", "jobs")
        await eventually(
            lambda: _is(pulled_size(), DEFAULT_PULL_BATCH_SIZE),
            "the pull to take the default again",
            timeout=10 * PULL_CONSUMER_CACHE_SECONDS,
        )
        await app.set_pull_consumer("jobs", conveyor.PullConsumer(batch_size=3))
        assert await pulled_size() == 3  # this process's own change: at once


async def _is(size: Awaitable[int], expected: int) -> bool:
    return await size == expected
