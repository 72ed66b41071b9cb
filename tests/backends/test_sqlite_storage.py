"""The SQLite file under conveyor: a path it cannot use is a conveyor error naming it, on every
call, and leaves the file as it was; a full disk fails sends with StorageFull and never stops
consumers from draining the queue (docs/sqlite.md, "A full disk")."""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
from pathlib import Path

import pytest

import conveyor
from tests.support.polling import eventually
from tests.support.tmpfs import resize, small_tmpfs

# A tmpfs this small fills in well under a second of sends.
SMALL_DISK = "2m"
PAD = "x" * 1_000
# A bound on draining the full disk (a failing test still ends).
DRAIN_SECONDS = 90.0


def tables_and_version(path: Path) -> tuple[set[str], int]:
    conn = sqlite3.connect(path)
    try:
        tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        return tables, conn.execute("PRAGMA user_version").fetchone()[0]
    finally:
        conn.close()


async def test_an_app_whose_first_open_failed_works_once_the_path_is_fixed(tmp_path: Path) -> None:
    path = tmp_path / "queue.db"
    path.mkdir()
    app = conveyor.App(f"sqlite:///{path}")  # it connects on first use
    try:
        for _ in range(2):
            with pytest.raises(conveyor.StorageUnusable, match="is it a directory"):
                await app.queue("jobs").send({"n": 1})
        path.rmdir()
        await app.queue("jobs").send({"n": 2})
        assert [message.body for message in await app.queue("jobs").peek(10)] == [{"n": 2}]
    finally:
        await app.close()


async def test_a_database_claiming_a_conveyor_schema_without_its_tables_is_refused_and_left_as_it_was(
    tmp_path: Path,
) -> None:
    path = tmp_path / "theirs.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY)")
    conn.execute("PRAGMA user_version = 1")  # the other program's own schema version
    conn.commit()
    conn.close()
    app = conveyor.App(f"sqlite:///{path}")
    try:
        with pytest.raises(conveyor.StorageUnusable, match="lacks conveyor's tables"):
            await app.queue("jobs").send({"n": 1})
    finally:
        await app.close()
    assert tables_and_version(path) == ({"orders"}, 1)


async def fill(queue: conveyor.Queue) -> list[str]:
    """Send batches of 1 KB bodies until the disk is full; the keys of every accepted message."""
    accepted: list[str] = []
    with pytest.raises(conveyor.StorageFull, match="is full"):
        for batch in range(10_000):
            keys = [f"fill-{batch}-{n}" for n in range(100)]
            await queue.send_batch([{"key": key, "pad": PAD} for key in keys])
            accepted += keys
    return accepted


async def test_a_full_disk_is_drained_to_the_last_message_while_sends_fail_and_store_nothing(
    tmp_path: Path,
) -> None:
    with small_tmpfs(tmp_path / "disk", SMALL_DISK) as disk:
        url = f"sqlite:///{disk / 'queue.db'}"
        # a producer and a worker with connections of their own, as two processes would have
        async with conveyor.App(url) as producer, conveyor.App(url) as worker:
            filled = await fill(producer.queue("jobs"))
            accepted, handled = list(filled), list[str]()
            drained = asyncio.Event()

            @worker.consumer("jobs", max_batch_size=10, max_batch_timeout=0)
            async def handle(batch: conveyor.MessageBatch, env: conveyor.Env) -> None:
                handled.extend(message.body["key"] for message in batch.messages)

            async def keep_sending() -> None:
                """Sends go on while the queue drains: each is stored, or refused with StorageFull."""
                for n in itertools.count():
                    if drained.is_set():
                        return
                    key = f"late-{n}"
                    try:
                        await producer.queue("jobs").send({"key": key, "pad": PAD})
                    except conveyor.StorageFull:
                        pass  # refused: stored nothing
                    else:
                        accepted.append(key)
                    await asyncio.sleep(0.002)

            # the disk is full when the drain starts (a batch then is refused, storing nothing);
            # later sends may be stored or refused, depending on how fast the drain frees pages
            with pytest.raises(conveyor.StorageFull):  # as the fill's last batch was
                await producer.queue("jobs").send_batch(
                    [{"key": f"refused-{n}", "pad": PAD} for n in range(100)]
                )
            stop = asyncio.Event()
            running = asyncio.create_task(worker.run_consumers(stop=stop))
            sending = asyncio.create_task(keep_sending())
            async with asyncio.timeout(90):
                await eventually(
                    lambda: set(filled) <= set(handled), "every message of the full disk handled"
                )
                drained.set()
                await sending
                await eventually(lambda: queue_is_empty(worker.queue("jobs")), "the queue drained")
            stop.set()
            await running
            assert sorted(handled) == sorted(accepted)  # each stored message once; no refused one

            resize(disk, "16m")  # space freed: sends go again
            await producer.queue("jobs").send({"key": "after", "pad": PAD})
            assert (await producer.queue("jobs").stats()).backlog == 1


async def queue_is_empty(queue: conveyor.Queue) -> bool:
    return (await queue.stats()).total == 0


async def test_on_a_full_disk_a_consumer_still_acks_retries_and_dead_letters(tmp_path: Path) -> None:
    with small_tmpfs(tmp_path / "disk", SMALL_DISK) as disk:
        async with conveyor.App(f"sqlite:///{disk / 'queue.db'}") as app:
            await app.create_queue("dlq")  # before the disk is full: a new queue grows the file
            filled = await fill(app.queue("jobs"))
            outcomes: dict[str, str] = {}

            @app.consumer(
                "jobs", max_batch_size=10, max_batch_timeout=0, max_retries=1, dead_letter_queue="dlq"
            )
            async def handle(batch: conveyor.MessageBatch, env: conveyor.Env) -> None:
                for message in batch.messages:
                    key, number = message.body["key"], int(message.body["key"].rsplit("-", 1)[1])
                    if number % 3 == 0 and message.attempts == 1:
                        message.retry()  # handled again, then acked
                        outcomes[key] = "retried"
                    elif number % 3 == 1:
                        message.retry()  # twice: past max_retries, to the dead-letter queue
                        outcomes[key] = "dead"
                    else:
                        message.ack()
                        outcomes[key] = "acked after a retry" if key in outcomes else "acked"

            stop = asyncio.Event()
            running = asyncio.create_task(app.run_consumers(stop=stop))
            await eventually(lambda: queue_is_empty(app.queue("jobs")), "the queue drained", DRAIN_SECONDS)
            stop.set()
            await running
            assert sorted(outcomes) == sorted(filled)
            assert "retried" not in outcomes.values()  # every retried message came back and was acked
            dead = [key for key, outcome in outcomes.items() if outcome == "dead"]
            assert (await app.queue("dlq").stats()).backlog == len(dead)
            assert {message.body["key"] for message in await app.queue("dlq").peek(100)} <= set(dead)
