"""What only the PostgreSQL engine does: enqueue inside the caller's transaction, SKIP LOCKED leases
shared by several backends, LISTEN/NOTIFY wake-ups across processes, schemas, and surviving a lost
connection or a server restart. The shared behaviour is in test_contract.py."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import sys
import textwrap
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import conveyor
from conveyor.core.ids import new_message_id
from conveyor.errors import BackendUnavailable, InvalidURL
from conveyor.types import DeadLetterInfo, OutgoingMessage
from reliability.servers import OwnPostgres
from tests.support.apps import TEST_LIMITS
from tests.support.engines import check_postgres, postgres_storage, unique_name
from tests.support.own_servers import own_postgres
from tests.support.services import POSTGRES_URL

psycopg = pytest.importorskip("psycopg")
postgres = pytest.importorskip("conveyor.backends.postgres.backend")
send_line = pytest.importorskip("conveyor.backends.postgres.send_line")

AppMaker = Callable[..., Awaitable[conveyor.App]]


@pytest.fixture
async def pg_url(tmp_path: Path) -> AsyncIterator[str]:
    check_postgres()
    async with postgres_storage(tmp_path) as url:
        yield url


@pytest.fixture
async def make_pg_app() -> AsyncIterator[AppMaker]:
    apps: list[conveyor.App] = []

    async def make(url: str, **options: Any) -> conveyor.App:
        """A connected App on `url`, closed at the end of the test."""
        options.setdefault("limits", TEST_LIMITS)
        app = conveyor.App(url, **options)
        apps.append(app)
        await app.connect()
        return app

    yield make
    for app in apps:
        await app.close()


async def connect() -> Any:
    return await psycopg.AsyncConnection.connect(POSTGRES_URL)


# -- URLs --------------------------------------------------------------------------------------


def test_conveyor_options_are_stripped_and_the_rest_reach_libpq() -> None:
    conninfo, options = postgres.parse_postgres_url(
        "postgres://u:secret@db:5433/app?schema=jobs&pool_size=3&sslmode=disable&pool_timeout=2.5"
    )
    assert conninfo == "postgresql://u:secret@db:5433/app?sslmode=disable"
    assert options == {"schema": "jobs", "pool_size": "3", "pool_timeout": "2.5"}


def test_the_schema_defaults_to_conveyor() -> None:
    assert postgres.PostgresBackend("postgresql://localhost/test").schema == "conveyor"


@pytest.mark.parametrize("query", ["schema=1abc", "schema=a-b", f"schema={'s' * 49}", "pool_size=0"])
def test_bad_options_are_invalid_urls(query: str) -> None:
    with pytest.raises(InvalidURL):
        postgres.PostgresBackend(f"postgresql://localhost/test?{query}")


def test_the_password_never_shows() -> None:
    app = conveyor.App("postgresql://user:hunter2@localhost/test?schema=s")
    assert "hunter2" not in repr(app) and "hunter2" not in repr(app.backend)
    with pytest.raises(InvalidURL) as caught:
        postgres.PostgresBackend("postgresql://user:hunter2@localhost/test?pool_size=x")
    assert "hunter2" not in str(caught.value)


async def test_an_unreachable_server_is_backend_unavailable() -> None:
    app = conveyor.App("postgresql://user:hunter2@127.0.0.1:1/test?pool_timeout=0.5")
    with pytest.raises(BackendUnavailable) as caught:
        await app.queue("jobs").send({"n": 1})
    assert "hunter2" not in str(caught.value)
    await app.close()


# -- schema ------------------------------------------------------------------------------------


async def test_concurrent_first_connects_create_one_versioned_schema(
    pg_url: str, make_pg_app: AppMaker
) -> None:
    apps = await asyncio.gather(*(make_pg_app(pg_url) for _ in range(4)))
    schema = apps[0].backend.schema  # type: ignore[attr-defined]
    async with await connect() as conn:
        cursor = await conn.execute(f'SELECT version FROM "{schema}".schema_version ORDER BY version')
        # every migration applied once
        assert await cursor.fetchall() == [(v,) for v in range(1, postgres.SCHEMA_VERSION + 1)]


async def make_old_schema(pg_url: str, version: int) -> str:
    """The schema as conveyor of schema `version` made it, with one queue, "jobs" (id 1);
    returns its name."""
    schema = pg_url.rpartition("schema=")[2]
    async with await connect() as conn:
        await conn.execute(f'CREATE SCHEMA "{schema}"')
        await conn.execute(
            f'CREATE TABLE "{schema}".schema_version '
            "(version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        for older in range(1, version + 1):
            await conn.execute(postgres.render_queries(schema)[f"schema_v{older}"])
            await conn.execute(f'INSERT INTO "{schema}".schema_version (version) VALUES (%s)', [older])
        await conn.execute(
            f'INSERT INTO "{schema}".queues (name, delivery_delay, retention_seconds) VALUES (%s, 0, 345600)',
            ["jobs"],
        )
        if version >= 2:
            await conn.execute(f'UPDATE "{schema}".queues SET max_backlog_messages = 50')
        await conn.commit()
    return schema


@pytest.mark.parametrize("version", [1, 2, 3, 4, 5])
async def test_an_older_schema_is_upgraded_in_place_and_keeps_its_messages_and_leases(
    pg_url: str, version: int
) -> None:
    schema = await make_old_schema(pg_url, version)
    waiting, orphan = new_message_id(), new_message_id()
    async with await connect() as conn:
        for message_id in (waiting, orphan):
            await conn.execute(
                f'INSERT INTO "{schema}".messages (id, queue_id, body, content_type, enqueued_at, visible_at)'
                " VALUES (%s, 1, '{}', 'json', now(), now())",
                [message_id],
            )
        if version == 1:
            # a worker of that version died holding `orphan`: its lease (a hex token) expired
            await conn.execute(
                f'UPDATE "{schema}".messages SET attempts = 1, lease_token = %s,'
                " visible_at = now() - interval '10 seconds' WHERE id = %s",
                [uuid.uuid4().hex, orphan],
            )
        await conn.commit()
    async with conveyor.App(pg_url) as app:
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
        # the upgraded schema keeps ordered message groups, replays included (a new seq);
        # jobs-dlq exists: setting the pull consumer made it
        await app.queue("jobs-dlq").send_batch([conveyor.SendRequest(n, group="g") for n in range(2)])
        assert await app.replay("jobs-dlq", to="jobs") == 2
        grouped = [m for m in await backend.lease_many("jobs", 10, 30) if m.group == "g"]
        assert [m.body for m in grouped] == [b"0"]
    if version == 1:
        assert leased == {waiting: (1, 0), orphan: (2, 1)}  # an old lease counts as handed
    else:
        assert leased == {waiting: (1, 0), orphan: (1, 0)}
    async with await connect() as conn:
        cursor = await conn.execute(f'SELECT version FROM "{schema}".schema_version ORDER BY version')
        assert await cursor.fetchall() == [(v,) for v in range(1, postgres.SCHEMA_VERSION + 1)]


async def test_a_message_without_headers_stores_null(pg_url: str, make_pg_app: AppMaker) -> None:
    app = await make_pg_app(pg_url)
    for n, headers in enumerate((None, {}, {"k": "v"})):
        await app.queue("jobs").send(n, headers=headers)
    schema = pg_url.rpartition("schema=")[2]
    async with await connect() as conn:
        cursor = await conn.execute(f'SELECT headers FROM "{schema}".messages ORDER BY seq')
        assert await cursor.fetchall() == [(None,), (None,), ({"k": "v"},)]


async def test_schemas_keep_their_queues_apart(pg_url: str, make_pg_app: AppMaker, tmp_path: Path) -> None:
    async with postgres_storage(tmp_path) as other_url:
        first, second = await make_pg_app(pg_url), await make_pg_app(other_url)
        await first.queue("jobs").send({"n": 1})
        assert await second.list_queues() == []
        await second.queue("jobs").send({"n": 2})
        [pulled] = await first.queue("jobs").pull(10)
        assert pulled.body == {"n": 1}
        [pulled] = await second.queue("jobs").pull(10)
        assert pulled.body == {"n": 2}


# -- enqueue inside the caller's transaction ---------------------------------------------------


async def test_a_send_in_a_rolled_back_transaction_stores_nothing(pg_url: str, make_pg_app: AppMaker) -> None:
    app = await make_pg_app(pg_url)
    queue = app.queue("outbox")
    await app.create_queue("outbox")
    async with await connect() as conn:
        await queue.send({"n": 1}, connection=conn)
        await queue.send_batch([{"n": 2}, {"n": 3}], connection=conn)
        await conn.rollback()
    assert (await queue.stats()).total == 0


async def test_a_send_in_a_committed_transaction_stores_exactly_one(
    pg_url: str, make_pg_app: AppMaker
) -> None:
    app = await make_pg_app(pg_url)
    queue = app.queue("outbox")
    await app.create_queue("outbox")
    async with await connect() as conn:
        message_id = await queue.send({"n": 1}, connection=conn)
        assert await queue.peek(10) == []  # not visible to others before the commit
        await conn.commit()
    [pulled] = await queue.pull(10)
    assert (pulled.id, pulled.body) == (message_id, {"n": 1})
    assert await queue.pull(10) == []


async def test_a_send_refused_as_full_in_a_transaction_leaves_the_rest_of_it_to_commit(
    pg_url: str, make_pg_app: AppMaker
) -> None:
    app = await make_pg_app(pg_url)
    queue = app.queue("outbox")
    await app.create_queue("outbox", max_backlog_messages=2)
    async with await connect() as conn:
        kept = [await queue.send({"n": 1}, connection=conn)]
        with pytest.raises(conveyor.QueueFull):
            await queue.send_batch(
                [conveyor.SendRequest({"n": 2}, dedup_id="two"), {"n": 3}], connection=conn
            )
        kept.append(await queue.send({"n": 4}, connection=conn))  # the transaction goes on
        await conn.commit()
    assert sorted(m.id for m in await queue.peek(10)) == sorted(kept)
    [pulled, _] = await queue.pull(10)
    await queue.ack([pulled.lease_id])
    stored = await queue.send({"n": 2}, dedup_id="two")  # the refused send claimed nothing
    assert stored in {m.id for m in await queue.peek(10)}


async def test_the_send_commits_or_rolls_back_with_the_callers_own_rows(
    pg_url: str, make_pg_app: AppMaker
) -> None:
    app = await make_pg_app(pg_url)
    schema = app.backend.schema  # type: ignore[attr-defined]
    queue = app.queue("orders")
    async with await connect() as conn:
        await conn.execute(f'CREATE TABLE "{schema}".orders (id int PRIMARY KEY)')
        await conn.commit()
        for order_id, commit in ((1, True), (2, False)):
            await conn.execute(f'INSERT INTO "{schema}".orders VALUES (%s)', [order_id])
            await queue.send({"order": order_id}, connection=conn)  # the queue is created on first use
            await (conn.commit() if commit else conn.rollback())
        cursor = await conn.execute(f'SELECT id FROM "{schema}".orders')
        assert await cursor.fetchall() == [(1,)]
    assert [m.body for m in await queue.pull(10)] == [{"order": 1}]


async def test_a_topic_publish_in_a_transaction_fans_out_only_at_commit(
    pg_url: str, make_pg_app: AppMaker
) -> None:
    app = await make_pg_app(pg_url)
    await app.subscribe("orders", queue="kitchen", types=["ORDER_UP"])
    await app.subscribe("orders", queue="audit")
    async with await connect() as conn:
        await app.topic("orders").publish({"type": "ORDER_UP", "n": 1}, connection=conn)
        await conn.rollback()
        await app.topic("orders").publish({"type": "ORDER_UP", "n": 2}, connection=conn)
        await conn.commit()
    for queue in ("kitchen", "audit"):
        assert [m.body["n"] for m in await app.queue(queue).pull(10)] == [2]


async def test_a_transactional_send_wakes_consumers_at_commit(pg_url: str, make_pg_app: AppMaker) -> None:
    app = await make_pg_app(pg_url)
    await app.create_queue("outbox")
    async with await connect() as conn:
        await app.queue("outbox").send({"n": 1}, connection=conn)
        waiter = asyncio.create_task(app.backend.wait_for_messages("outbox", 60))
        await asyncio.sleep(0.1)
        assert not waiter.done()  # nothing is visible before the commit
        await conn.commit()
    async with asyncio.timeout(10):
        await waiter


async def test_a_connection_of_another_kind_is_refused(pg_url: str, make_pg_app: AppMaker) -> None:
    app = await make_pg_app(pg_url)
    with pytest.raises(TypeError, match="AsyncConnection"):
        await app.queue("outbox").send({"n": 1}, connection=object())
    assert await app.list_queues() == []


async def test_repeating_a_send_whose_reply_was_lost_stores_it_once(
    pg_url: str, make_pg_app: AppMaker
) -> None:
    app = await make_pg_app(pg_url)
    await app.create_queue("jobs")
    backend = app.backend
    message = OutgoingMessage("jobs", new_message_id(), b"{}", "json")
    send = backend._sender(backend._send_params([message]))  # type: ignore[attr-defined]
    await backend._run(send, repeatable=True)  # type: ignore[attr-defined]
    await backend._run(send, repeatable=True)  # type: ignore[attr-defined]  # as if the reply was lost
    assert [m.id for m in await app.queue("jobs").peek(10)] == [message.id]


async def test_repeating_a_lone_send_whose_reply_was_lost_stores_it_once(
    pg_url: str, make_pg_app: AppMaker
) -> None:
    app = await make_pg_app(pg_url)
    await app.create_queue("jobs")
    backend = app.backend
    message = OutgoingMessage("jobs", new_message_id(), b"{}", "json")
    await backend._send_one(message)  # type: ignore[attr-defined]
    await backend._send_one(message)  # type: ignore[attr-defined]  # as if the reply was lost
    assert [m.id for m in await app.queue("jobs").peek(10)] == [message.id]


async def test_a_lone_send_stores_the_row_a_batch_stores(pg_url: str, make_pg_app: AppMaker) -> None:
    """The lean statement of a lone send (no dedup id) and the general one store alike."""
    app = await make_pg_app(pg_url)
    await app.create_queue("jobs", delivery_delay=5)
    dead = DeadLetterInfo("m-0", "elsewhere", 3, "boom", 1_700_000_000.0)

    def message(delay: float | None) -> OutgoingMessage:
        return OutgoingMessage(
            "jobs", new_message_id(), b'{"n":1}', "json", delay, dead, headers={"k": "v"}, group="g"
        )

    for delay in (None, 30.0):
        alone, batch = message(delay), [message(delay), message(delay)]
        assert await app.backend.send_many([alone]) == [alone.id]
        await app.backend.send_many(batch)
        schema = pg_url.rpartition("schema=")[2]
        async with await connect() as conn:
            cursor = await conn.execute(
                "SELECT id, body, content_type, visible_at - enqueued_at, dead_letter, headers, group_id"
                f' FROM "{schema}".messages WHERE id = ANY(%s)',
                [[alone.id, batch[0].id]],
            )
            rows = {row[0]: row[1:] for row in await cursor.fetchall()}
        assert rows[alone.id] == rows[batch[0].id]


async def test_lone_sends_in_a_row_keep_one_connection_and_a_pause_gives_it_back(
    pg_url: str, make_pg_app: AppMaker, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = await make_pg_app(pg_url)
    queue = app.queue("jobs")
    await queue.send({"n": 0})
    pool = app.backend._pool  # type: ignore[attr-defined]
    pool.pop_stats()
    for n in range(1, 4):
        await queue.send({"n": n})
    assert pool.pop_stats().get("requests_num", 0) == 0  # no checkout from the pool
    monkeypatch.setattr(send_line, "IDLE_SECONDS", 0.0)  # every send now follows a pause
    for n in range(4, 6):
        await queue.send({"n": n})
    assert pool.pop_stats().get("requests_num", 0) == 2
    assert (await queue.stats()).backlog == 6


async def test_a_kept_send_connection_goes_back_to_the_pool_when_sends_pause(
    pg_url: str, make_pg_app: AppMaker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An idle producer holds no pool slot: the timer gives the kept connection back by itself."""
    monkeypatch.setattr(send_line, "IDLE_SECONDS", 0.2)
    app = await make_pg_app(f"{pg_url}&pool_size=2")
    queue = app.queue("jobs")
    pool = app.backend._pool  # type: ignore[attr-defined]
    for n in range(3):
        await queue.send({"n": n})
    assert pool.get_stats()["pool_available"] < pool.get_stats()["pool_size"]  # one is kept
    await asyncio.sleep(0.6)  # no send meanwhile: nothing else would give it back
    stats = pool.get_stats()
    assert stats["pool_available"] == stats["pool_size"]
    await queue.send({"n": 3})  # the next send takes one again
    assert (await queue.stats()).backlog == 4


async def test_a_pool_of_one_connection_is_not_kept_for_sends(pg_url: str, make_pg_app: AppMaker) -> None:
    app = await make_pg_app(f"{pg_url}&pool_size=1&pool_timeout=3")
    queue = app.queue("jobs")
    for n in range(3):
        await queue.send({"n": n})
    assert (await queue.stats()).backlog == 3  # BackendUnavailable if the sends held the one connection


# -- several backends on one schema ------------------------------------------------------------


async def test_concurrent_leases_from_two_backends_never_share_a_message(
    pg_url: str, make_pg_app: AppMaker
) -> None:
    first, second = await make_pg_app(pg_url), await make_pg_app(pg_url)
    sent: list[str] = []
    for start in range(0, 600, 100):
        sent += await first.queue("work").send_batch([{"n": n} for n in range(start, start + 100)])

    async def take_all(app: conveyor.App) -> list[str]:
        taken: list[str] = []
        while batch := await app.backend.lease_many("work", 7, 60):
            taken += [message.id for message in batch]
        return taken

    takers = [take_all(app) for app in (first, second) for _ in range(3)]
    results = await asyncio.gather(*takers)
    everything = [message_id for taken in results for message_id in taken]
    assert sorted(everything) == sorted(sent)  # each message leased exactly once
    assert all(results)  # every taker got some: they really ran side by side


async def test_only_the_lease_itself_skips_the_wal_flush(pg_url: str, make_pg_app: AppMaker) -> None:
    # leases commit with synchronous_commit off for their own transaction; the pooled
    # connection, which sends and settles use next, must still wait for the flush
    app = await make_pg_app(pg_url)
    await app.queue("work").send_batch([1, 2, 3])
    leased = await app.backend.lease_many("work", 3, 60)
    await app.core.extend_leases("work", [m.lease_id for m in leased[:1]], 60)
    await app.core.release("work", [m.lease_id for m in leased[1:2]])
    assert len(leased) == 3

    async def setting(conn: Any) -> str:
        return str((await (await conn.execute("SHOW synchronous_commit")).fetchone())[0])

    backend = app.backend
    assert isinstance(backend, postgres.PostgresBackend)
    pool = backend._pool
    assert pool is not None
    for _ in range(pool.max_size):
        async with pool.connection() as conn:
            assert await setting(conn) == "on"


async def test_a_send_from_another_process_wakes_a_waiting_consumer(
    pg_url: str, make_pg_app: AppMaker
) -> None:
    app = await make_pg_app(pg_url)
    await app.create_queue("wake")
    waiter = asyncio.create_task(app.backend.wait_for_messages("wake", 60))
    await asyncio.sleep(0.1)
    assert not waiter.done()
    script = textwrap.dedent(
        f"""
        import conveyor
        with_app = conveyor.App({pg_url!r})
        with_app.queue("wake").send_sync({{"n": 1}})
        import asyncio
        asyncio.run(with_app.close())
        """
    )
    process = await asyncio.create_subprocess_exec(sys.executable, "-c", script, cwd=os.getcwd())
    assert await process.wait() == 0
    async with asyncio.timeout(10):
        await waiter
    [pulled] = await app.queue("wake").pull()
    assert pulled.body == {"n": 1}


async def test_a_sweep_deletes_expired_messages_beyond_one_chunk(
    pg_url: str, make_pg_app: AppMaker, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = await make_pg_app(pg_url)
    await app.create_queue("old", retention_seconds=60)
    await app.queue("old").send_batch([{"n": n} for n in range(7)])
    await app.queue("new").send({"n": 7})
    schema = app.backend.schema  # type: ignore[attr-defined]
    async with await connect() as conn:  # age the first queue's messages instead of waiting
        await conn.execute(
            f"UPDATE \"{schema}\".messages SET enqueued_at = enqueued_at - interval '1 hour'"
            f" WHERE queue_id = (SELECT id FROM \"{schema}\".queues WHERE name = 'old')"
        )
        await conn.commit()
    monkeypatch.setattr(postgres, "SWEEP_CHUNK", 3)
    assert await app.sweep() == 7
    assert (await app.queue("old").stats()).total == 0
    assert (await app.queue("new").stats()).total == 1


# -- lost connections --------------------------------------------------------------------------


async def terminate_connections(application_name: str) -> int:
    async with await psycopg.AsyncConnection.connect(POSTGRES_URL, autocommit=True) as conn:
        cursor = await conn.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = %s",
            [application_name],
        )
        row = await cursor.fetchone()
        return int(row[0])


async def test_the_engine_reconnects_after_its_connections_are_killed(
    pg_url: str, make_pg_app: AppMaker
) -> None:
    name = unique_name("conveyor_app")
    app = await make_pg_app(f"{pg_url}&application_name={name}")
    queue = app.queue("jobs")
    await queue.send({"n": 1})
    waiter = asyncio.create_task(app.backend.wait_for_messages("idle", 60))  # starts the LISTEN connection
    await asyncio.sleep(0.1)
    assert await terminate_connections(name) >= 2

    await queue.send({"n": 2})  # repeatable: retried on a fresh connection
    assert (await queue.stats()).backlog == 2
    leased: list[conveyor.PulledMessage] = []
    async with asyncio.timeout(30):
        while len(leased) < 2:
            with contextlib.suppress(BackendUnavailable):  # a lease is not repeated: the caller retries
                leased += await queue.pull(10)
    assert sorted(m.body["n"] for m in leased) == [1, 2]

    await app.queue("idle").send({"n": 3})  # the LISTEN connection came back too
    async with asyncio.timeout(10):
        await waiter


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[OwnPostgres]:
    """A PostgreSQL cluster of the test's own on a spare port: the test may crash it."""
    check_postgres()
    with own_postgres(tmp_path / "server") as server:
        yield server


async def until(condition: Callable[[], Awaitable[bool]]) -> None:
    for _ in itertools.count():
        if await condition():
            return
        await asyncio.sleep(0.05)


@pytest.mark.slow
async def test_a_worker_survives_a_server_crash_and_restart_and_loses_nothing(
    own_server: OwnPostgres, make_pg_app: AppMaker
) -> None:
    app = await make_pg_app(own_server.url)
    total = 500
    handled: set[int] = set()
    some_handled, all_handled = asyncio.Event(), asyncio.Event()

    @app.consumer(
        "restart", max_batch_size=10, max_batch_timeout=0, visibility_timeout=2.0, max_concurrency=2
    )
    async def handle(batch: conveyor.MessageBatch, env: conveyor.Env) -> None:
        await asyncio.sleep(0.01)  # keep batches in flight across the restart
        handled.update(message.body["n"] for message in batch.messages)
        if len(handled) >= 50:
            some_handled.set()
        if len(handled) == total:
            all_handled.set()

    queue = app.queue("restart")
    for start in range(0, 400, 100):
        await queue.send_batch([{"n": n} for n in range(start, start + 100)])
    stop = asyncio.Event()
    worker = asyncio.create_task(app.run_consumers(stop=stop, shutdown_grace=5))
    try:
        async with asyncio.timeout(90):
            await some_handled.wait()
            # SIGKILL to the server and its backends (no shutdown), then started on the same data
            await asyncio.to_thread(own_server.crash)
            await asyncio.to_thread(own_server.start)
            await until(lambda: send_after_restart(queue, range(400, total)))
            await all_handled.wait()

            async def settled() -> bool:
                return (await queue.stats()).total == 0

            await until(settled)  # every batch settled, or redelivered after its lease and settled
    finally:
        stop.set()
        await worker
    assert handled == set(range(total))


async def send_after_restart(queue: conveyor.Queue, numbers: range) -> bool:
    """True once sent; a send is retried only while the server is still unreachable."""
    try:
        await queue.send_batch([{"n": n} for n in numbers])
    except BackendUnavailable:
        return False
    return True
