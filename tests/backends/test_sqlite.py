"""What only the SQLite engine promises: several processes share one file safely, URL options,
durability settings and a versioned schema."""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import sqlite3
import sys
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest

import conveyor
from conveyor.backends import from_url
from conveyor.backends.base import is_ahead
from conveyor.backends.sqlite import backend as sqlite_backend
from conveyor.backends.sqlite.backend import SCHEMA_VERSION
from conveyor.backends.sqlite.wake import WakeWatch
from conveyor.core.ids import new_message_id
from conveyor.errors import InvalidURL, QueueFull
from conveyor.limits import IDLE_POLL_SECONDS
from conveyor.testing import FakeClock
from conveyor.types import OutgoingMessage
from tests.support.apps import TEST_LIMITS

ROOT = Path(__file__).resolve().parents[2]
SENDER = """
import asyncio, sys
import conveyor

async def main(url: str, tag: str, count: int) -> None:
    async with conveyor.App(url) as app:
        queue = app.queue("shared")
        half = count // 2
        await asyncio.gather(*(queue.send({"tag": tag, "n": n}) for n in range(half)))
        for start in range(half, count, 50):
            await queue.send_batch([{"tag": tag, "n": n} for n in range(start, min(start + 50, count))])

asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
"""


@pytest.mark.slow
async def test_two_processes_sending_to_one_file_lose_nothing(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    per_process = 2_000
    senders = [
        await asyncio.create_subprocess_exec(
            sys.executable, "-c", SENDER, url, tag, str(per_process), cwd=ROOT
        )
        for tag in ("a", "b")
    ]
    try:
        async with asyncio.timeout(120):
            assert [await sender.wait() for sender in senders] == [0, 0]
    finally:
        for sender in senders:
            if sender.returncode is None:
                sender.kill()
                await sender.wait()
    async with conveyor.App(url) as app:
        queue = app.queue("shared")
        assert (await queue.stats()).backlog == 2 * per_process
        seen: set[tuple[str, int]] = set()
        while pulled := await queue.pull(batch_size=100):
            seen.update((message.body["tag"], message.body["n"]) for message in pulled)
            await queue.ack(acks=[message.lease_id for message in pulled])
    assert seen == {(tag, n) for tag in ("a", "b") for n in range(per_process)}


@pytest.mark.parametrize(
    ("option", "pragma"), [("", 2), ("?synchronous=normal", 1), ("?synchronous=full", 2)]
)
async def test_synchronous_defaults_to_full_and_normal_is_an_option(
    tmp_path: Path, option: str, pragma: int
) -> None:
    path = tmp_path / "q.db"
    async with conveyor.App(f"sqlite:///{path}{option}") as app:
        await app.queue("q").send({"n": 1})
        backend = app.backend
        conn = backend._conn  # type: ignore[attr-defined]
        value = await backend._run(lambda: conn.execute("PRAGMA synchronous").fetchone()[0])  # type: ignore[attr-defined]
    assert value == pragma


@pytest.mark.parametrize(
    "url",
    [
        "sqlite://host/x.db",
        "sqlite:///",
        "sqlite:///x.db?synchronous=sometimes",
        "sqlite:///x.db?journal=off",
    ],
)
def test_bad_sqlite_urls_are_clear_errors(url: str) -> None:
    with pytest.raises(InvalidURL):
        from_url(url)


async def test_the_schema_is_versioned_and_a_newer_one_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    async with conveyor.App(f"sqlite:///{path}") as app:
        await app.queue("q").send({"n": 1})
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
        conn.commit()
    finally:
        conn.close()
    app = conveyor.App(f"sqlite:///{path}")
    with pytest.raises(conveyor.StorageUnusable, match="newer than this conveyor"):
        await app.queue("q").send({"n": 2})
    await app.close()


@pytest.mark.parametrize("version", [1, 2, 3, 4, 5, 6])
async def test_a_file_of_an_older_schema_is_upgraded_in_place_and_keeps_its_messages_and_leases(
    tmp_path: Path, version: int
) -> None:
    path = tmp_path / f"v{version}.db"
    waiting, orphan = new_message_id(), new_message_id()
    conn = sqlite3.connect(path)  # the file as that conveyor made it, a worker holding `orphan`
    try:
        for older in range(1, version + 1):
            conn.executescript(sqlite_backend.Q[f"schema_v{older}"])
        conn.execute(
            "INSERT INTO conveyor_queues (name, delivery_delay, retention_seconds, created_at) "
            "VALUES ('jobs', 0, 345600, 0)"
        )
        if version >= 2:
            conn.execute("UPDATE conveyor_queues SET max_backlog_messages = 50 WHERE name = 'jobs'")
        for message_id in (waiting, orphan):
            conn.execute(
                "INSERT INTO conveyor_messages (id, queue_id, body, content_type, enqueued_at, visible_at) "
                "VALUES (?, 1, '{}', 'json', 0, 0)",
                (message_id,),
            )
        if version == 1:
            # that worker died: its lease (a v1 hex token, no kind) expired
            conn.execute(
                "UPDATE conveyor_messages SET attempts = 1, lease_token = ?, visible_at = 0 WHERE id = ?",
                (uuid.uuid4().hex, orphan),
            )
        conn.execute(f"PRAGMA user_version = {version}")
        conn.commit()
    finally:
        conn.close()
    async with conveyor.App(f"sqlite:///{path}") as app:
        backend = await app.core.connected()
        leased = {m.id: (m.attempts, m.lost) for m in await backend.lease_many("jobs", 10, 30)}
        # a queue made before deduplication has the default window, and deduplicates
        settings = (await app.get_queue("jobs")).settings
        assert settings.dedup_window_seconds == 300
        assert settings.max_backlog_messages == (50 if version >= 2 else None)
        first = await app.queue("jobs").send(1, dedup_id="d")
        assert await app.queue("jobs").send(2, dedup_id="d") == first
        # messages made before headers have none; new ones keep theirs
        with_headers = await app.queue("jobs").send(3, headers={"k": "v"})
        headers = {m.id: m.headers for m in await app.queue("jobs").peek(10)}
        assert headers == {waiting: {}, orphan: {}, first: {}, with_headers: {"k": "v"}}
        # a queue made before pull consumer settings has none, and takes one
        assert settings.pull_consumer is None
        assert settings.partitions == 1  # and one partition, as before partitions
        consumer = conveyor.PullConsumer(batch_size=7, max_retries=1, dead_letter_queue="jobs-dlq")
        await app.set_pull_consumer("jobs", consumer)
        assert (await app.get_queue("jobs")).settings.pull_consumer == consumer
        # the upgraded file keeps ordered message groups: one of a group out at a time
        await app.queue("jobs").send_batch([conveyor.SendRequest(n, group="g") for n in range(2)])
        grouped = [m for m in await backend.lease_many("jobs", 10, 30) if m.group == "g"]
        assert [m.body for m in grouped] == [b"0"]
    if version == 1:
        assert leased == {waiting: (1, 0), orphan: (2, 1)}  # an old lease counts as handed
    else:
        assert leased == {waiting: (1, 0), orphan: (1, 0)}
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 7
        # v7 dropped the age index (the sweep walks the id index)
        age_index = "SELECT 1 FROM sqlite_master WHERE name = 'conveyor_messages_age'"
        assert conn.execute(age_index).fetchone() is None
    finally:
        conn.close()


async def test_a_message_without_headers_stores_null(tmp_path: Path) -> None:
    async with conveyor.App(f"sqlite:///{tmp_path / 'q.db'}") as app:
        await app.queue("jobs").send(1)
        await app.queue("jobs").send(2, headers={})
        await app.queue("jobs").send(3, headers={"k": "v"})
    conn = sqlite3.connect(tmp_path / "q.db")
    try:
        stored = conn.execute("SELECT headers FROM conveyor_messages ORDER BY seq").fetchall()
    finally:
        conn.close()
    assert stored == [(None,), (None,), ('{"k":"v"}',)]


async def test_a_lease_ahead_handing_every_message_hands_them_all_oldest_first(tmp_path: Path) -> None:
    # a drain's usual lease: every row under the handed token, in its lease id and its row alike
    async with conveyor.App(f"sqlite:///{tmp_path / 'q.db'}") as app:
        await app.queue("jobs").send_batch([{"n": n} for n in range(4)])
        backend = await app.core.connected()
        leased = await backend.lease_ahead("jobs", 4, 30, hand_first=4)
        assert [json.loads(m.body)["n"] for m in leased] == [0, 1, 2, 3]
        assert [(m.attempts, m.lost, is_ahead(m.lease_id)) for m in leased] == [(1, 0, False)] * 4
        conn = sqlite3.connect(tmp_path / "q.db")
        try:
            tokens = {token for (token,) in conn.execute("SELECT lease_token FROM conveyor_messages")}
        finally:
            conn.close()
        assert tokens == {m.lease_id.split(".")[1] for m in leased}
        assert (await app.queue("jobs").ack(acks=[m.lease_id for m in leased])).ack_count == 4


async def test_a_settle_finding_stale_leases_runs_again_without_undoing_its_group(tmp_path: Path) -> None:
    # A settle whose statement takes fewer rows than it names (one lease is stale) rolls back its
    # own part of the group commit, not the send written with it, and runs again to learn which
    # leases were live
    async with conveyor.App(f"sqlite:///{tmp_path / 'q.db'}") as app:
        queue = app.queue("jobs")
        await queue.send_batch([{"n": n} for n in range(3)])
        pulled = sorted(await queue.pull(batch_size=3), key=lambda m: m.body["n"])
        assert (await queue.ack(acks=[pulled[0].lease_id])).ack_count == 1
        backend = await app.core.connected()
        held = threading.Event()
        busy = asyncio.ensure_future(backend._run(held.wait))  # type: ignore[attr-defined]
        await asyncio.sleep(0)  # the writer thread is taken first
        send = asyncio.ensure_future(queue.send({"n": 3}))
        settle = asyncio.ensure_future(queue.ack(acks=[m.lease_id for m in pulled]))
        for _ in range(1000):  # both wait for the writer thread, to be written in one group
            if len(backend._pending) == 2:  # type: ignore[attr-defined]
                break
            await asyncio.sleep(0.001)
        assert len(backend._pending) == 2  # type: ignore[attr-defined]
        commits = backend._commits  # type: ignore[attr-defined]
        held.set()
        await busy
        await send
        result = await settle
        assert backend._commits - commits == 2  # type: ignore[attr-defined]  # the group, and the settle again
        assert (result.ack_count, result.stale) == (2, [pulled[0].lease_id])
        assert [m.body["n"] for m in await queue.pull(batch_size=10)] == [3]


async def test_leases_and_settles_of_rows_between_other_queues_rows_touch_only_their_own(
    tmp_path: Path,
) -> None:
    # Two queues' sends alternate, so a queue's rows are not every rowid between its first and
    # last: a lease or a settle that named them by that range would take the other queue's too.
    async with conveyor.App(f"sqlite:///{tmp_path / 'q.db'}") as app:
        backend = await app.core.connected()
        for name in ("a", "b"):
            await app.create_queue(name)
        for n in range(6):
            await backend.send_many(
                [
                    OutgoingMessage(name, new_message_id(), json.dumps({"n": n}).encode(), "json")
                    for name in ("a", "b")
                ]
            )
        leased = await backend.lease_ahead("a", 6, 30, hand_first=6)
        assert [json.loads(m.body)["n"] for m in leased] == list(range(6))
        settled = await app.queue("a").ack(
            acks=[m.lease_id for m in leased[:3]], retries=[m.lease_id for m in leased[3:]]
        )
        assert (settled.ack_count, settled.retry_count, settled.stale) == (3, 3, [])
        assert (await app.queue("b").stats()).backlog == 6
        others = await backend.lease_many("b", 10, 30)
        assert [(json.loads(m.body)["n"], m.attempts) for m in others] == [(n, 1) for n in range(6)]
        again = await backend.lease_many("a", 10, 30)
        assert [(json.loads(m.body)["n"], m.attempts) for m in again] == [(n, 2) for n in range(3, 6)]


async def test_a_lease_of_fresh_rows_and_rows_whose_lease_expired_counts_each_rightly(tmp_path: Path) -> None:
    # one lease takes rows without a token (first delivery) and rows whose lease expired: a
    # handed one (a delivery without an outcome: attempts up, lost up) and a read-ahead one
    # (never handed: its attempt is given back)
    clock = FakeClock()
    async with conveyor.App(f"sqlite:///{tmp_path / 'q.db'}", clock=clock) as app:
        await app.queue("jobs").send_batch([{"n": n} for n in range(4)])
        backend = await app.core.connected()
        handed = await backend.lease_many("jobs", 1, 10)
        ahead = await backend.lease_many("jobs", 1, 10, handed=False)
        assert [json.loads(m.body)["n"] for m in handed + ahead] == [0, 1]
        clock.advance(11)
        leased = await backend.lease_many("jobs", 10, 10)
        counts = {json.loads(m.body)["n"]: (m.attempts, m.lost) for m in leased}
        assert counts == {0: (2, 1), 1: (1, 0), 2: (1, 0), 3: (1, 0)}
        conn = sqlite3.connect(tmp_path / "q.db")
        try:  # the rows keep what the lease handed out (the next delivery counts from there)
            stored = conn.execute("SELECT body, attempts, lost FROM conveyor_messages").fetchall()
        finally:
            conn.close()
        assert {json.loads(body)["n"]: (attempts, lost) for body, attempts, lost in stored} == counts
        stale = await app.queue("jobs").ack(acks=[m.lease_id for m in handed + leased])
        assert (stale.ack_count, stale.stale) == (4, [handed[0].lease_id])


async def test_reopening_a_file_keeps_its_messages(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'q.db'}"
    async with conveyor.App(url) as app:
        await app.queue("q").send({"kept": True})
    async with conveyor.App(url) as app:
        [pulled] = await app.queue("q").pull()
        assert pulled.body == {"kept": True}


async def test_a_sweep_on_the_system_clock_removes_what_each_queue_retains_no_longer(tmp_path: Path) -> None:
    # the sweep walks the id index up to the ids made before the earliest cutoff (their time
    # prefix); on the system clock that bound is real, and each message is held to its own
    # queue's retention: a longer one keeps messages older than the shorter one's cutoff
    async with conveyor.App(f"sqlite:///{tmp_path / 'q.db'}", limits=TEST_LIMITS) as app:
        await app.create_queue("short", retention_seconds=2)
        await app.create_queue("longer", retention_seconds=60)
        for name in ("short", "longer"):
            await app.queue(name).send_batch([f"{name} old {n}" for n in range(3)])
        await asyncio.sleep(2.2)
        await app.queue("short").send("short young")
        assert await app.sweep() == 3
        assert [m.body for m in await app.queue("short").peek(10)] == ["short young"]
        assert len(await app.queue("longer").peek(10)) == 3


async def test_stats_and_peek_read_beside_a_write_and_close_leaves_no_thread(tmp_path: Path) -> None:
    app = conveyor.App(f"sqlite:///{tmp_path / 'q.db'}")
    queue = app.queue("jobs")
    await queue.send_batch(list(range(10)))
    # another process holds the write lock: whole-queue reads still answer (WAL readers)
    other = sqlite3.connect(tmp_path / "q.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        assert (await queue.stats()).backlog == 10
        assert [m.body for m in await queue.peek(3)] == [0, 1, 2]
    finally:
        other.execute("ROLLBACK")
        other.close()
    await app.close()
    assert not [t for t in threading.enumerate() if t.name.startswith("conveyor-sqlite")]


SEND_ONE = """
import asyncio, sys
import conveyor

async def main(url: str) -> None:
    async with conveyor.App(url) as app:
        await app.queue("shared").send("from another process")

asyncio.run(main(sys.argv[1]))
"""


@pytest.mark.parametrize("watch", ["inotify", "poll only"])
async def test_a_send_from_another_process_wakes_a_waiting_consumer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, watch: str
) -> None:
    if watch == "poll only":  # what systems without inotify get: the poll of the WAL file
        monkeypatch.setattr(WakeWatch, "open", classmethod(lambda cls, database, loop: None))
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    async with conveyor.App(url) as app:
        await app.create_queue("shared")
        waiting = asyncio.create_task(app.backend.wait_for_messages("shared", 60))
        await asyncio.sleep(0.2)
        assert not waiting.done()
        sender = await asyncio.create_subprocess_exec(sys.executable, "-c", SEND_ONE, url, cwd=ROOT)
        assert await sender.wait() == 0
        async with asyncio.timeout(10):  # polled every 50 ms: far sooner than the 60 s asked
            await waiting
        [message] = await app.queue("shared").pull()
        assert message.body == "from another process"


WORKER = """
import asyncio, sys
import conveyor

async def main(url: str) -> None:
    app = conveyor.App(url)
    stop = asyncio.Event()

    @app.consumer("shared", max_batch_timeout=0)
    async def handle(batch: conveyor.MessageBatch, env: conveyor.Env) -> None:
        for message in batch.messages:
            print(message.body, flush=True)
            if message.body == "last":
                stop.set()

    async with app:
        print("ready", flush=True)
        await app.run_consumers(stop=stop)

asyncio.run(main(sys.argv[1]))
"""

SEND_EACH_AFTER_THE_LAST = """
import asyncio, sys
import conveyor

async def main(url: str) -> None:
    async with conveyor.App(url) as app:
        for body in sys.stdin:
            await app.queue("shared").send(body.strip())

asyncio.run(main(sys.argv[1]))
"""


async def test_a_worker_process_wakes_on_each_send_from_a_producer_process_without_its_poll(
    tmp_path: Path,
) -> None:
    # A poll interval of an hour: every delivery below comes from the wake file
    # (the consumer's own idle look is every IDLE_POLL_SECONDS: 20 sends would take about 10 s).
    url = f"sqlite:///{tmp_path / 'shared.db'}?poll_interval=3600"
    async with conveyor.App(url) as app:
        await app.create_queue("shared")
    worker = await asyncio.create_subprocess_exec(
        sys.executable, "-c", WORKER, url, cwd=ROOT, stdout=asyncio.subprocess.PIPE
    )
    producer = await asyncio.create_subprocess_exec(
        sys.executable, "-c", SEND_EACH_AFTER_THE_LAST, url, cwd=ROOT, stdin=asyncio.subprocess.PIPE
    )
    assert worker.stdout is not None and producer.stdin is not None
    try:
        async with asyncio.timeout(IDLE_POLL_SECONDS * 5):  # 20 sends, each after the last is handled
            assert await worker.stdout.readline() == b"ready\n"
            for n in range(20):
                body = "last" if n == 19 else f"m{n}"
                producer.stdin.write(f"{body}\n".encode())
                await producer.stdin.drain()
                assert await worker.stdout.readline() == f"{body}\n".encode()
            assert await worker.wait() == 0
    finally:
        producer.stdin.close()
        await producer.wait()
        if worker.returncode is None:
            worker.kill()
            await worker.wait()


async def test_the_wake_file_beside_the_database_has_its_permissions(tmp_path: Path) -> None:
    database = tmp_path / "shared.db"
    async with conveyor.App(f"sqlite:///{database}") as app:
        await app.create_queue("shared")
        database.chmod(0o660)
        await app.queue("shared").send("wakes other processes")
    wake = tmp_path / "shared.db-wake"
    assert wake.stat().st_mode & 0o777 == 0o660
    assert wake.stat().st_size == 1  # one byte, written over and over: it never grows


@pytest.mark.parametrize("synchronous", ["normal", "full"])
async def test_a_lone_send_waits_for_another_writer_without_holding_up_the_event_loop(
    tmp_path: Path, synchronous: str
) -> None:
    # a lone send may commit on the event loop (synchronous=normal only: a commit without an
    # fsync), and only when the write lock is free at once; here another connection holds it, so
    # the send waits on the writer thread, in either mode
    database = tmp_path / "shared.db"
    async with conveyor.App(f"sqlite:///{database}?synchronous={synchronous}") as app:
        await app.create_queue("shared")
        other = sqlite3.connect(database, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        sending = asyncio.create_task(app.queue("shared").send("after the other writer"))
        await asyncio.sleep(0.2)  # the loop runs on while the send waits
        assert not sending.done()
        other.execute("COMMIT")
        other.close()
        await sending
        [message] = await app.queue("shared").peek(1)
        assert message.body == "after the other writer"


async def test_after_a_lone_send_on_the_event_loop_the_writer_thread_still_waits_for_another_writer(
    tmp_path: Path,
) -> None:
    # the lone send's try on the event loop leaves the connection's busy timeout at 0; the writer
    # thread sets its own back before it writes, so a lease waits for another process's write
    # lock instead of failing at once
    database = tmp_path / "shared.db"
    async with conveyor.App(f"sqlite:///{database}?synchronous=normal") as app:
        await app.create_queue("shared")
        backend = await app.core.connected()
        await app.queue("shared").send("sent on the event loop")
        other = sqlite3.connect(database, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        # straight to the engine: its first use of the connection since the send is this write
        leasing = asyncio.create_task(backend.lease_many("shared", 10, 30))
        await asyncio.sleep(0.2)
        assert not leasing.done()  # waiting on the busy timeout, not failed
        other.execute("COMMIT")
        other.close()
        [message] = await leasing
        assert message.body == b'"sent on the event loop"'


async def test_a_lone_send_on_the_event_loop_is_one_statement_in_autocommit(tmp_path: Path) -> None:
    # one INSERT is its own atomic transaction: no BEGIN IMMEDIATE and COMMIT around it, which
    # cost a lone send a sixth of its SQLite time
    async with conveyor.App(f"sqlite:///{tmp_path / 'shared.db'}?synchronous=normal") as app:
        await app.create_queue("shared")
        backend = await app.core.connected()
        assert isinstance(backend, sqlite_backend.SQLiteBackend) and backend._conn is not None
        await app.queue("shared").send("the first")  # sets the busy timeout of the tries: 0
        statements: list[str] = []
        backend._conn.set_trace_callback(statements.append)
        message_id = await app.queue("shared").send("alone")
        backend._conn.set_trace_callback(None)
        assert [s.split()[0] for s in statements] == ["INSERT"]
        assert [(m.id, m.body) for m in await app.queue("shared").peek(2)][1] == (message_id, "alone")


@pytest.mark.parametrize("synchronous", ["normal", "full"])
async def test_a_lone_send_the_single_statement_cannot_store_does_what_a_batch_does(
    tmp_path: Path, synchronous: str
) -> None:
    # a missing queue, a bounded one, a dedup id and an id stored already fall back to the
    # batch's transaction, inline (normal) or on the writer thread (full) alike
    async with conveyor.App(f"sqlite:///{tmp_path / 'shared.db'}?synchronous={synchronous}") as app:
        assert await app.queue("created-on-first-use").send("first")
        await app.create_queue("bounded", max_backlog_messages=1)
        await app.queue("bounded").send("fits")
        with pytest.raises(QueueFull):
            await app.queue("bounded").send("does not fit")
        first = await app.queue("bounded-dedup").send("once", dedup_id="d-1")
        assert await app.queue("bounded-dedup").send("twice", dedup_id="d-1") == first
        backend = await app.core.connected()
        again = OutgoingMessage("created-on-first-use", new_message_id(), b'"again"', "json")
        assert await backend.send_many([again]) == [again.id]
        assert await backend.send_many([again]) == [again.id]  # a send tried again: stored once
        assert [m.body for m in await app.queue("created-on-first-use").peek(10)] == ["first", "again"]
        assert [m.body for m in await app.queue("bounded").peek(10)] == ["fits"]
        assert [m.body for m in await app.queue("bounded-dedup").peek(10)] == ["once"]


def _open_and_send(path: Path, n: int, start: Any) -> None:
    async def go() -> None:
        async with conveyor.App(f"sqlite:///{path}") as app:
            await app.queue("jobs").send(n)

    start.wait()  # every process opens the new file in the same instant
    asyncio.run(go())


def test_processes_opening_one_new_file_at_once_all_open_it(tmp_path: Path) -> None:
    """Workers started together on a file that does not exist yet: one creates the schema, the
    others wait for it and use it (none mistakes the half-seen schema for another program's)."""
    forked = multiprocessing.get_context("fork")
    for attempt in range(30):  # a race: each attempt may or may not hit it
        path = tmp_path / f"new-{attempt}.db"
        start = forked.Barrier(4)
        processes = [forked.Process(target=_open_and_send, args=(path, n, start)) for n in range(4)]
        for process in processes:
            process.start()
        for process in processes:
            process.join(30)
        assert [process.exitcode for process in processes] == [0, 0, 0, 0]
        conn = sqlite3.connect(path)
        try:
            assert conn.execute("SELECT count(*) FROM conveyor_messages").fetchone()[0] == 4
        finally:
            conn.close()
