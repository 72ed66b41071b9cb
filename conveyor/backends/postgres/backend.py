"""postgresql:// (or postgres://) — PostgreSQL 13+ through psycopg 3 and an async connection pool.

URL options, stripped before the URL goes to libpq (every other option, e.g. sslmode, passes on):
`?schema=conveyor` (where the tables live), `?pool_size=10` (most pooled connections) and
`?pool_timeout=10` (seconds to wait for a connection before BackendUnavailable).

Storage. One `messages` table for every queue. Each batch operation is one statement: sends
insert many rows from `unnest` arrays (bytea bodies), a lone send without a dedup id one row from
scalars (`send_one`: nothing to build and unnest); a lease takes the oldest visible rows of a
queue `FOR UPDATE SKIP LOCKED` along the (queue_id, visible_at, seq) index and pushes their
visible_at to the lease deadline; a settle deletes acks, delays retries and moves dead letters
into their queue in one statement of data-modifying CTEs. Every time is the server's (`now()`).
Parameters and results travel in binary (no escaping of bodies). Pooled connections plan with
`enable_sort = off` (a lease walks the ready index even when statistics are stale), generic plans
and no JIT: see `_configure`.

Bloat. A message is inserted, updated once per delivery and deleted when settled: acked rows are
deleted rather than flagged, so the table holds only live work and the ready index stays as short
as the backlog. The lease update changes an indexed column, so it cannot be a HOT update; the table
keeps 20% of each page free (fillfactor 80) so the new row version usually lands on the same page,
and autovacuum is tuned per table to run after ~1% of rows are dead instead of 20%. Dead index
entries at the ready index's left edge are skipped (and marked dead) by the lease scans, and
vacuumed soon after; PostgreSQL 14+ also removes the versions a lease leaves in the id and age
indexes as it goes (bottom-up deletion). Long transactions anywhere in the database hold back that
cleanup, as for any queue table.

Notifications have a price: PostgreSQL serialises the commits of notifying transactions, so many
processes each sending one message at a time contend there; in one process, concurrent sends are
group-committed into one statement by the core.

Wake-ups. Every write that makes messages deliverable calls `pg_notify` in its own statement (so a
send inside a caller's transaction notifies on commit). Each backend keeps one LISTEN connection
and fans notifications out to the waiters of each queue; a waiter also sleeps at most until the
queue's next delayed message or lease deadline (asked of the server), or its timeout.

Transactional enqueue. `send_many(messages, connection=conn)` with an open psycopg
`AsyncConnection` writes with that connection and does not commit: the messages exist if and only
if the caller's transaction commits, and consumers are notified at that commit.

Failures. A lost connection (the server restarting, a network cut) is BackendUnavailable. The pool
then drops its dead connections and reconnects; operations that are safe to repeat (reads, sends,
lease renewals) are retried with backoff first. A send repeated after a lost reply recognises, by
the unique message ids, that its first try committed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit

import psycopg
from psycopg import sql
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from conveyor.backends.base import Backend, handed_token, new_token
from conveyor.backends.partitioning import partition_key, placement_hash
from conveyor.backends.postgres.connecting import check_connects
from conveyor.backends.postgres.send_line import SendLine
from conveyor.backends.scripts import load_named
from conveyor.backends.urls import redact
from conveyor.errors import (
    BackendUnavailable,
    ConveyorError,
    InvalidURL,
    MessageLeased,
    QueueAlreadyExists,
    QueueNotFound,
)
from conveyor.headers import dead_letter_headers, dump_headers, load_headers
from conveyor.limits import check_room
from conveyor.types import (
    SYSTEM_CLOCK,
    Clock,
    DeadLetterInfo,
    Lease,
    LeasedMessage,
    Outcomes,
    OutgoingMessage,
    PullConsumer,
    QueueInfo,
    QueueSettings,
    QueueStats,
    StoredMessage,
    Subscription,
    WorkerInfo,
)

log = logging.getLogger("conveyor.postgres")
T = TypeVar("T")
Conn = psycopg.AsyncConnection[Any]

_RAW = load_named("conveyor.backends.postgres", "queries.sql")
SCHEMA_VERSION = 6
MIGRATIONS = {
    1: "schema_v1",
    2: "schema_v2",
    3: "schema_v3",
    4: "schema_v4",
    5: "schema_v5",
    6: "schema_v6",
}

DEFAULT_SCHEMA = "conveyor"
DEFAULT_POOL_SIZE = 10
DEFAULT_POOL_TIMEOUT = 10.0
OPTIONS = ("schema", "pool_size", "pool_timeout")
# Short enough that the LISTEN channel "conveyor:<schema>" fits PostgreSQL's 63-byte identifiers.
SCHEMA_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,47}")
# Retries of a repeatable operation after a lost connection: the delay doubles up to the cap.
RETRY_FIRST_DELAY = 0.05
RETRY_MAX_DELAY = 1.0
# Expired messages deleted per queue per statement: bounds one sweep statement's locks and WAL.
SWEEP_CHUNK = 10_000
# SQLSTATEs meaning the connection, not the statement, failed: class 08 and the server shutting
# down or starting up (a restart).
_LOST_STATES = ("57P01", "57P02", "57P03")


def parse_postgres_url(url: str) -> tuple[str, dict[str, str]]:
    """Split a URL into the conninfo psycopg gets and conveyor's own options."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    options = {key: value for key, value in query if key in OPTIONS}
    passed = [(key, value) for key, value in query if key not in OPTIONS]
    schema = options.setdefault("schema", DEFAULT_SCHEMA)
    if SCHEMA_NAME.fullmatch(schema) is None:
        raise InvalidURL(f"invalid schema {schema!r}: use 1 to 48 letters, digits and '_', not first a digit")
    for key, low in (("pool_size", 1), ("pool_timeout", 0)):
        if key in options:
            try:
                valid = float(options[key]) > low if key == "pool_timeout" else int(options[key]) >= low
            except ValueError:
                valid = False
            if not valid:
                raise InvalidURL(f"invalid {key} {options[key]!r} in {redact(url)!r}")
    conninfo = parts._replace(scheme="postgresql", query=urlencode(passed)).geturl()
    return conninfo, options


def render_queries(schema: str) -> dict[str, bytes]:
    """Every named query with the schema filled in, rendered once per backend."""
    identifier = sql.Identifier(schema)
    return {
        name: sql.SQL(_compact(text)).format(schema=identifier).as_bytes(None) for name, text in _RAW.items()
    }


def _compact(text: str) -> str:
    """A statement without its comment lines and indentation: psycopg parses a statement's
    placeholders once and caches it only up to 4,096 bytes (the send statement is longer with its
    comments, and was parsed again at every send, a fifth of its time in the client)."""
    lines = (line.strip() for line in text.splitlines())
    return "\n".join(line for line in lines if line and not line.startswith("--"))


def _connection_lost(exc: psycopg.Error) -> bool:
    state = exc.sqlstate
    return isinstance(exc, psycopg.OperationalError) and (
        state is None or state.startswith("08") or state in _LOST_STATES
    )


def _info(row: Sequence[Any]) -> QueueInfo:
    return QueueInfo(
        name=row[0],
        settings=QueueSettings(
            delivery_delay=row[1],
            retention_seconds=row[2],
            max_backlog_messages=row[5],
            max_backlog_bytes=row[6],
            dedup_window_seconds=row[7],
            pull_consumer=PullConsumer.from_json(row[8]),
            partitions=row[9],
        ),
        paused=row[3],
        created_at=row[4],
    )


def _subscription(row: Sequence[Any]) -> Subscription:
    return Subscription(
        topic=row[0], queue=row[1], types=None if row[2] is None else tuple(row[2]), created_at=row[3]
    )


def _dead_letter(data: dict[str, Any] | None) -> DeadLetterInfo | None:
    return None if data is None else DeadLetterInfo.from_dict(data)


def _split_leases(leases: Sequence[Lease]) -> tuple[list[str], list[str]]:
    """The message ids and the tokens of `leases`, as two arrays."""
    return [lease[0] for lease in leases], [lease[1] for lease in leases]


class PostgresBackend(Backend):
    engine = "postgresql"
    uses_local_clock = False

    def __init__(self, url: str, *, clock: Clock = SYSTEM_CLOCK) -> None:
        super().__init__(url, clock=clock)
        self._conninfo, options = parse_postgres_url(url)
        self.schema = options["schema"]
        self.pool_size = int(options.get("pool_size", DEFAULT_POOL_SIZE))
        self.pool_timeout = float(options.get("pool_timeout", DEFAULT_POOL_TIMEOUT))
        self.channel = f"conveyor:{self.schema}"
        self._q = render_queries(self.schema)
        self._pool: AsyncConnectionPool | None = None
        self._listener: asyncio.Task[None] | None = None
        self._listening = asyncio.Event()
        self._waiters: dict[str, set[asyncio.Future[None]]] = {}
        self._checking: asyncio.Task[None] | None = None
        # the connection kept for lone sends (send_line.py); none with a pool of one connection
        self._send_line: SendLine | None = None

    def sibling(self) -> PostgresBackend:
        return PostgresBackend(self.url, clock=self.clock)

    def __repr__(self) -> str:
        return f"PostgresBackend({redact(self.url)!r})"

    # -- lifecycle ---------------------------------------------------------------------------

    async def connect(self) -> None:
        if self._pool is not None:
            return
        # before the pool, whose retries would hide a cause that waiting will not fix
        await check_connects(self._conninfo, self.url, self.pool_timeout)
        pool = AsyncConnectionPool(
            self._conninfo,
            min_size=1,
            max_size=self.pool_size,
            open=False,
            timeout=self.pool_timeout,
            kwargs={"autocommit": True},
            configure=_configure,
            name=f"conveyor-{self.schema}",
        )
        try:
            await pool.open(wait=True, timeout=self.pool_timeout)
            async with pool.connection() as conn:
                await self._migrate(conn)
        except BaseException as exc:
            await pool.close()
            if isinstance(exc, psycopg.OperationalError):
                raise BackendUnavailable(f"cannot reach PostgreSQL at {redact(self.url)}: {exc}") from None
            raise
        self._pool = pool
        self._send_line = SendLine(pool) if self.pool_size > 1 else None

    async def _migrate(self, conn: Conn) -> None:
        """Create or upgrade the schema. Once it is current this only reads (no DDL privilege needed);
        otherwise an advisory lock serialises concurrent first connects."""
        if await self._installed_version(conn) == SCHEMA_VERSION:
            return
        schema = sql.Identifier(self.schema)
        async with conn.transaction():
            await conn.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", [f"conveyor:migrate:{self.schema}"]
            )
            version = await self._installed_version(conn)
            if version > SCHEMA_VERSION:
                raise ConveyorError(
                    f"schema {self.schema!r} has conveyor schema v{version}, "
                    f"newer than this conveyor (v{SCHEMA_VERSION})"
                )
            if version == 0:
                await conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(schema))
                await conn.execute(
                    sql.SQL(
                        "CREATE TABLE IF NOT EXISTS {}.schema_version"
                        " (version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
                    ).format(schema)
                )
            for target in range(version + 1, SCHEMA_VERSION + 1):
                await conn.execute(self._q[MIGRATIONS[target]])
                await conn.execute(
                    sql.SQL("INSERT INTO {}.schema_version (version) VALUES (%s)").format(schema), [target]
                )

    async def _installed_version(self, conn: Conn) -> int:
        # an MVCC read of the catalog: it sees a table another connection has just committed
        cursor = await conn.execute(
            "SELECT count(*) > 0 FROM pg_catalog.pg_tables WHERE schemaname = %s AND tablename = %s",
            [self.schema, "schema_version"],
        )
        row = await cursor.fetchone()
        if row is None or not row[0]:
            return 0
        cursor = await conn.execute(
            sql.SQL("SELECT coalesce(max(version), 0) FROM {}.schema_version").format(
                sql.Identifier(self.schema)
            )
        )
        row = await cursor.fetchone()
        return 0 if row is None else int(row[0])

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
            self._listener = None
        if self._checking is not None:
            self._checking.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._checking
            self._checking = None
        self._wake_all()
        line, self._send_line = self._send_line, None
        if line is not None:
            await line.close()
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()

    # -- running statements ------------------------------------------------------------------

    async def _run(
        self, work: Callable[[Conn], Awaitable[T]], *, repeatable: bool = False, kept: bool = False
    ) -> T:
        """Run `work` on a pooled connection (autocommit: each statement is its own transaction),
        with `kept` the one kept for lone sends when it is free (send_line.py).

        A lost connection is BackendUnavailable; a `repeatable` operation is first retried with
        backoff until the pool's timeout has passed.
        """
        if self._pool is None:
            raise RuntimeError("the PostgreSQL backend is not connected")
        deadline = time.monotonic() + self.pool_timeout
        delay = RETRY_FIRST_DELAY
        while True:
            line = self._send_line if kept else None
            held = self._pool.connection() if line is None or line.busy else line.connection()
            try:
                async with held as conn:
                    return await work(conn)
            except PoolTimeout as exc:
                raise BackendUnavailable(
                    f"no connection to PostgreSQL at {redact(self.url)}: {exc}"
                ) from None
            except psycopg.Error as exc:
                if not _connection_lost(exc):
                    raise
                self._check_pool()
                if not repeatable or time.monotonic() + delay > deadline:
                    raise BackendUnavailable(f"lost the connection to PostgreSQL: {exc}") from exc
                log.info("connection to PostgreSQL lost (%s); retrying in %.2fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_DELAY)

    def _check_pool(self) -> None:
        """Drop every dead pooled connection at once (after a restart they all are), in the background."""
        if self._pool is None or (self._checking is not None and not self._checking.done()):
            return
        self._checking = asyncio.create_task(self._pool.check())
        self._checking.add_done_callback(_consume_result)

    async def _fetchone(self, query: str, params: dict[str, Any], *, repeatable: bool = False) -> Any:
        async def work(conn: Conn) -> Any:
            cursor = await conn.execute(self._q[query], params, binary=True)
            return await cursor.fetchone()

        return await self._run(work, repeatable=repeatable)

    async def _fetchall(self, query: str, params: dict[str, Any], *, repeatable: bool = False) -> list[Any]:
        async def work(conn: Conn) -> list[Any]:
            cursor = await conn.execute(self._q[query], params, binary=True)
            return await cursor.fetchall()

        return await self._run(work, repeatable=repeatable)

    async def _rowcount(self, query: str, params: dict[str, Any], *, repeatable: bool = False) -> int:
        async def work(conn: Conn) -> int:
            cursor = await conn.execute(self._q[query], params, binary=True)
            return cursor.rowcount

        return await self._run(work, repeatable=repeatable)

    # -- wake-ups ----------------------------------------------------------------------------

    def _start_listener(self) -> None:
        if self._listener is None and self._pool is not None:
            self._listener = asyncio.create_task(
                self._listen_forever(), name=f"conveyor-listen-{self.schema}"
            )

    async def _listen_forever(self) -> None:
        """Hold one LISTEN connection, reconnecting with backoff; wake every waiter after a gap."""
        delay = RETRY_FIRST_DELAY
        reconnecting = False
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(self._conninfo, autocommit=True)
                async with conn:
                    await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
                    self._listening.set()
                    if reconnecting:
                        self._wake_all()  # a notification may have been missed while not listening
                    reconnecting = True
                    delay = RETRY_FIRST_DELAY
                    async for notify in conn.notifies():
                        self._wake(notify.payload)
            except psycopg.Error as exc:
                log.info("LISTEN connection to PostgreSQL lost (%s); reconnecting in %.2fs", exc, delay)
            finally:
                self._listening.clear()
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX_DELAY)

    def _wake(self, queue: str) -> None:
        for future in self._waiters.pop(queue, ()):
            if not future.done():
                future.set_result(None)

    def _wake_all(self) -> None:
        for queue in list(self._waiters):
            self._wake(queue)

    async def wait_for_messages(self, queue: str, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, timeout)
        future: asyncio.Future[None] = loop.create_future()
        self._waiters.setdefault(queue, set()).add(future)
        try:
            self._start_listener()
            if not self._listening.is_set():
                # the state read below only counts once notifications are flowing
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._listening.wait(), max(0.0, deadline - loop.time()))
            due = None
            with contextlib.suppress(TimeoutError):  # never outlast the caller's timeout
                due = await asyncio.wait_for(self._seconds_until_due(queue), deadline - loop.time())
            if due is not None:
                deadline = min(deadline, loop.time() + due)
            remaining = deadline - loop.time()
            if remaining > 0 and not future.done():
                await asyncio.wait([future], timeout=remaining)
        finally:
            waiters = self._waiters.get(queue)
            if waiters is not None:
                waiters.discard(future)
                if not waiters:
                    del self._waiters[queue]

    async def _seconds_until_due(self, queue: str) -> float | None:
        """Seconds until the queue's next message is deliverable; None if none is coming (or unknown)."""
        try:
            row = await self._fetchone("wake_state", {"queue": queue})
        except BackendUnavailable:
            return None  # the caller still wakes at its timeout
        if row is None or row[0] or row[1] is None:
            return None
        return max(0.0, float(row[1]))

    # -- queues ------------------------------------------------------------------------------

    async def create_queue(self, name: str, settings: QueueSettings, *, exist_ok: bool) -> QueueInfo:
        params = {
            "name": name,
            "delivery_delay": settings.delivery_delay,
            "retention_seconds": settings.retention_seconds,
            "max_backlog_messages": settings.max_backlog_messages,
            "max_backlog_bytes": settings.max_backlog_bytes,
            "dedup_window": settings.dedup_window_seconds,
            "pull_consumer": None if settings.pull_consumer is None else settings.pull_consumer.to_json(),
            "partitions": settings.partitions,
        }
        while True:
            row = await self._fetchone("insert_queue", params, repeatable=exist_ok)
            if row is not None:
                return _info(row)
            if not exist_ok:
                raise QueueAlreadyExists(name)
            existing = await self.get_queue(name)
            if existing is not None:
                return existing
            # deleted between the two statements: try again

    async def get_queue(self, name: str) -> QueueInfo | None:
        row = await self._fetchone("queue_by_name", {"name": name}, repeatable=True)
        return None if row is None else _info(row)

    async def update_queue(self, name: str, settings: QueueSettings) -> QueueInfo:
        params = {
            "name": name,
            "delivery_delay": settings.delivery_delay,
            "retention_seconds": settings.retention_seconds,
            "max_backlog_messages": settings.max_backlog_messages,
            "max_backlog_bytes": settings.max_backlog_bytes,
            "dedup_window": settings.dedup_window_seconds,
            "pull_consumer": None if settings.pull_consumer is None else settings.pull_consumer.to_json(),
            "partitions": settings.partitions,
        }
        row = await self._fetchone("update_queue", params, repeatable=True)
        if row is None:
            raise QueueNotFound(name)
        return _info(row)

    async def delete_queue(self, name: str) -> bool:
        async def delete(conn: Conn) -> bool:
            async with conn.transaction():
                # Lock first, then delete in a new snapshot: sends that held the queue have committed.
                cursor = await conn.execute(self._q["lock_queue_for_delete"], {"name": name}, binary=True)
                row = await cursor.fetchone()
                if row is None:
                    return False
                await conn.execute(self._q["delete_queue"], {"id": row[0], "name": name})
                return True

        return await self._run(delete)

    async def list_queues(self) -> list[QueueInfo]:
        return [_info(row) for row in await self._fetchall("list_queues", {}, repeatable=True)]

    async def set_paused(self, name: str, paused: bool) -> None:
        params = {"name": name, "paused": paused, "channel": self.channel}
        row = await self._fetchone("set_paused", params, repeatable=True)
        if row is None or row[0] == 0:
            raise QueueNotFound(name)

    # -- topic subscriptions ------------------------------------------------------------------

    async def add_subscription(self, topic: str, queue: str, types: Sequence[str] | None) -> Subscription:
        params = {"topic": topic, "queue": queue, "types": None if types is None else list(types)}
        return _subscription(await self._fetchone("upsert_subscription", params, repeatable=True))

    async def remove_subscription(self, topic: str, queue: str) -> bool:
        return bool(await self._rowcount("delete_subscription", {"topic": topic, "queue": queue}))

    async def list_subscriptions(self, topic: str | None = None) -> list[Subscription]:
        rows = await self._fetchall("list_subscriptions", {"topic": topic}, repeatable=True)
        return [_subscription(row) for row in rows]

    # -- worker heartbeats ---------------------------------------------------------------------

    async def record_worker(self, worker: WorkerInfo, ttl: float) -> None:
        params = {
            "id": worker.id,
            "seen_at": worker.seen_at,
            "info": json.dumps(worker.to_dict()),
            "oldest": worker.seen_at - ttl,
        }

        async def record(conn: Conn) -> None:
            await conn.execute(self._q["record_worker"], params, binary=True)

        await self._run(record, repeatable=True)

    async def list_workers(self, since: float) -> list[WorkerInfo]:
        rows = await self._fetchall("list_workers", {"since": since}, repeatable=True)
        return [WorkerInfo.from_dict(json.loads(row[0])) for row in rows]

    async def forget_worker(self, worker_id: str) -> None:
        async def forget(conn: Conn) -> None:
            await conn.execute(self._q["forget_worker"], {"id": worker_id}, binary=True)

        await self._run(forget, repeatable=True)

    # -- messages ----------------------------------------------------------------------------

    async def send_many(self, messages: Sequence[OutgoingMessage]) -> list[str]:
        if not messages:
            return []
        if len(messages) == 1 and messages[0].dedup_id is None:
            return await self._send_one(messages[0])
        params = self._send_params(messages)
        ids = self._sent(messages, params, await self._run(self._sender(params), repeatable=True))
        if ids is None:  # a bounded queue: again, with its room checked
            ids = await self._run(self._bounded_sender(params, messages), repeatable=True)
        return ids

    async def _send_one(self, message: OutgoingMessage) -> list[str]:
        """A lone message without a dedup id, by the lean `send_one` statement (scalars, no
        dedup claims); into a bounded queue, by the general send with its room checked."""
        params = {
            "queue": message.queue,
            "id": message.id,
            "body": message.body,
            "content_type": message.content_type,
            "delay": None if message.delay_seconds is None else float(message.delay_seconds),
            "dead_letter": None if message.dead_letter is None else _json(message.dead_letter),
            "headers": None if message.headers is None else dump_headers(message.headers),
            "group": message.group,
            "channel": self.channel,
        }

        async def send(conn: Conn) -> Any:
            cursor = await conn.execute(self._q["send_one"], params, binary=True)
            return await cursor.fetchone()

        row = await self._run(send, repeatable=True, kept=True)
        if row is None:
            raise QueueNotFound(message.queue)
        if row[0]:  # bounded: nothing stored
            return await self._run(
                self._bounded_sender(self._send_params([message]), [message]), repeatable=True
            )
        return [message.id]

    async def send_many_in(self, connection: Any, messages: Sequence[OutgoingMessage]) -> list[str]:
        """Transactional enqueue (the `SendsInTransaction` capability): write with the caller's
        open psycopg AsyncConnection and do not commit; consumers are notified at their commit."""
        if not isinstance(connection, psycopg.AsyncConnection):
            raise TypeError(
                f"connection must be an open psycopg.AsyncConnection, not {type(connection).__name__}"
            )
        if not messages:
            return []
        params = self._send_params(messages)
        cursor = await connection.execute(self._q["send"], params, binary=True)
        ids = self._sent(messages, params, await cursor.fetchone())
        if ids is None:
            # a savepoint: a refusal (QueueFull) takes back this send alone, not the caller's
            # work; the bounded queues stay locked until the caller's transaction ends
            async with connection.transaction():
                ids = await self._send_checked(connection, params, messages)
        return ids

    @staticmethod
    def _sent(messages: Sequence[OutgoingMessage], params: dict[str, Any], row: Any) -> list[str] | None:
        """The ids the messages are stored under, from the send statement's reply; None when it
        stored nothing because a queue is bounded (the send goes again through `_send_checked`);
        QueueNotFound naming a missing queue."""
        if row is None or not row[0]:
            found = set(row[1] or ()) if row is not None else set()
            missing = [name for name in params["queue_names"] if name not in found]
            if missing or row is None or not row[5]:
                raise QueueNotFound(missing[0] if missing else params["queue_names"][0])
            return None
        ids = [m.id for m in messages]
        if row[3]:  # deduplicated: stored under their dedup id's first message
            for position, stored_as in zip(row[3], row[4], strict=True):
                ids[position - 1] = stored_as
        return ids

    def _bounded_sender(
        self, params: dict[str, Any], messages: Sequence[OutgoingMessage]
    ) -> Callable[[Conn], Awaitable[list[str]]]:
        """A send into bounded queues as a repeatable operation: one transaction (a repeat after
        a lost reply stores nothing twice and adds no room: an id is stored once)."""

        async def send(conn: Conn) -> list[str]:
            async with conn.transaction():
                return await self._send_checked(conn, params, messages)

        return send

    async def _send_checked(
        self, conn: Any, params: dict[str, Any], messages: Sequence[OutgoingMessage]
    ) -> list[str]:
        """Lock the bounded queues, send, then count what they hold: QueueFull when the rows this
        send stored do not fit (raised inside a transaction or savepoint that then rolls back, so
        nothing stays), else the ids. A deduplicated message stores no row and takes no room."""
        cursor = await conn.execute(self._q["lock_bounded"], params, binary=True)
        bounded = {row[0]: row for row in await cursor.fetchall()}
        cursor = await conn.execute(self._q["send"], {**params, "checked": True}, binary=True)
        row = await cursor.fetchone()
        ids = self._sent(messages, params, row)
        assert ids is not None  # checked: being bounded is no reason to store nothing
        adding: dict[int, tuple[int, int]] = {}
        for queue_id, size in zip(row[6] or (), row[7] or (), strict=True):
            count, total = adding.get(queue_id, (0, 0))
            adding[queue_id] = (count + 1, total + size)
        filled = [queue_id for queue_id in bounded if queue_id in adding]
        if filled:  # else its limits were removed meanwhile, or nothing new was stored
            by_bytes = [queue_id for queue_id in filled if bounded[queue_id][3] is not None]
            counted = {"ids": filled, "by_bytes": by_bytes or [0]}
            cursor = await conn.execute(self._q["backlog"], counted, binary=True)
            holds = {row[0]: (int(row[1]), int(row[2])) for row in await cursor.fetchall()}
            for queue_id in filled:
                _, name, most_messages, most_bytes = bounded[queue_id]
                added = adding[queue_id]
                count, size = holds.get(queue_id, added)
                held = (count - added[0], size - added[1] if queue_id in by_bytes else 0)
                settings = QueueSettings(max_backlog_messages=most_messages, max_backlog_bytes=most_bytes)
                check_room(name, settings, held, added if queue_id in by_bytes else (added[0], 0))
        return ids

    def _send_params(self, messages: Sequence[OutgoingMessage]) -> dict[str, Any]:
        return {
            "queue_names": sorted({m.queue for m in messages}),
            "ids": [m.id for m in messages],
            "queues": [m.queue for m in messages],
            "bodies": [m.body for m in messages],
            "content_types": [m.content_type for m in messages],
            "delays": _column(
                [None if m.delay_seconds is None else float(m.delay_seconds) for m in messages]
            ),
            "dead_letters": _column(
                [None if m.dead_letter is None else _json(m.dead_letter) for m in messages]
            ),
            "dedup_ids": _column([m.dedup_id for m in messages]),
            "headers": _column([None if m.headers is None else dump_headers(m.headers) for m in messages]),
            "groups": _column([m.group for m in messages]),
            # what places each message (partitioning.py), for the dedup key of a partitioned queue
            "dedup_hashes": _column(
                [
                    None if m.dedup_id is None else placement_hash(partition_key(m.group, m.dedup_id, m.id))
                    for m in messages
                ]
            ),
            "channel": self.channel,
            "checked": False,
        }

    def _sender(self, params: dict[str, Any]) -> Callable[[Conn], Awaitable[Any]]:
        """The send statement as a repeatable operation: a repeat after a lost reply stores
        nothing twice (an id is stored once)."""

        async def send(conn: Conn) -> Any:
            cursor = await conn.execute(self._q["send"], params, binary=True)
            return await cursor.fetchone()

        return send

    # -- shared rate limits (SharedRateLimits) ------------------------------------------------

    async def take_tokens(self, queue: str, wanted: int, rate: float, burst: float) -> tuple[int, float]:
        params = {"name": queue, "wanted": float(wanted), "rate": float(rate), "burst": float(burst)}
        taken, tokens = await self._fetchone("take_tokens", params)
        return int(taken), 0.0 if taken else max(0.0, (1 - float(tokens)) / rate)

    async def give_back_tokens(self, queue: str, count: int, burst: float) -> None:
        params = {"name": queue, "count": float(count), "burst": float(burst)}
        await self._rowcount("give_back_tokens", params)

    async def lease_many(
        self, queue: str, limit: int, visibility_timeout: float, *, handed: bool = True
    ) -> list[LeasedMessage]:
        token = new_token(handed)
        params = {"queue": queue, "limit": limit, "token": token, "visibility_timeout": visibility_timeout}
        rows = await self._fetchall("lease", params)
        # the lease id format of make_lease_id, inlined: this runs per message
        return [
            LeasedMessage(
                id_,
                queue,
                body,
                kind,
                sent,
                attempts,
                f"{id_}.{token}",
                _dead_letter(dead),
                lost,
                None if headers is None else load_headers(headers),
                group,
            )
            for _, id_, body, kind, sent, attempts, dead, lost, headers, group in rows
        ]

    async def lease_ahead(
        self, queue: str, limit: int, visibility_timeout: float, *, hand_first: int
    ) -> list[LeasedMessage]:
        token = new_token(handed=False)
        params = {
            "queue": queue,
            "limit": limit,
            "hand": hand_first,
            "token": token,
            "handed_token": handed_token(token),
            "visibility_timeout": visibility_timeout,
        }
        rows = await self._fetchall("lease_ahead", params)
        return [
            LeasedMessage(
                id_,
                queue,
                body,
                kind,
                sent,
                attempts,
                f"{id_}.{tok}",
                _dead_letter(dead),
                lost,
                None if headers is None else load_headers(headers),
                group,
            )
            for id_, body, kind, sent, attempts, dead, lost, tok, headers, group in rows
        ]

    async def begin(self, queue: str, leases: Sequence[Lease]) -> list[bool]:
        ids, tokens = _split_leases(leases)
        if not ids:
            return []
        # not repeatable: a second run after a lost reply would find the tokens changed
        rows = await self._fetchall("begin", {"queue": queue, "ids": ids, "tokens": tokens})
        begun = {int(row[0]) for row in rows}
        return [n in begun for n in range(1, len(ids) + 1)]

    async def extend_leases(self, queue: str, leases: Sequence[Lease], visibility_timeout: float) -> int:
        ids, tokens = _split_leases(leases)
        if not ids:
            return 0
        params = {"queue": queue, "ids": ids, "tokens": tokens, "visibility_timeout": visibility_timeout}
        return await self._rowcount("extend_leases", params, repeatable=True)

    async def release(self, queue: str, leases: Sequence[Lease]) -> int:
        ids, tokens = _split_leases(leases)
        if not ids:
            return 0
        row = await self._fetchone(
            "release", {"queue": queue, "ids": ids, "tokens": tokens, "channel": self.channel}
        )
        return int(row[0])

    async def settle(self, queue: str, outcomes: Outcomes) -> list[bool]:
        acks, retries, moves = outcomes.acks, outcomes.retries, outcomes.dead_letters
        targets = sorted({move.queue for move in moves if move.queue is not None})
        params = {
            "queue": queue,
            "channel": self.channel,
            "dead_letter_queues": targets,
            "ack_ids": [lease[0] for lease in acks],
            "ack_tokens": [lease[1] for lease in acks],
            "retry_ids": [lease[0] for lease, _ in retries],
            "retry_tokens": [lease[1] for lease, _ in retries],
            "retry_delays": [float(delay) for _, delay in retries],
            "dead_ids": [move.lease[0] for move in moves],
            "dead_tokens": [move.lease[1] for move in moves],
            "dead_new_ids": [move.new_id for move in moves],
            "dead_records": [_json(move.record) for move in moves],
            "dead_queues": [move.queue for move in moves],
            "dead_headers": [dump_headers(dead_letter_headers(move.record)) for move in moves],
        }
        ok, found, acked, retried, dead, _ = await self._fetchone("settle", params)
        if not ok:
            missing = [name for name in targets if name not in set(found or ())]
            raise QueueNotFound(missing[0] if missing else queue)
        statuses = [False] * len(outcomes)
        for offset, settled in ((0, acked), (len(acks), retried), (len(acks) + len(retries), dead)):
            for position in settled or ():
                statuses[offset + position - 1] = True
        return statuses

    async def stats(self, queue: str) -> QueueStats:
        row = await self._fetchone("stats", {"queue": queue}, repeatable=True)
        if row is None:
            raise QueueNotFound(queue)
        paused, ready, delayed, in_flight, age, size = row
        return QueueStats(queue, ready, delayed, in_flight, age or 0.0, size, paused)

    async def peek(self, queue: str, limit: int) -> list[StoredMessage]:
        async def work(conn: Conn) -> list[Any] | None:
            cursor = await conn.execute(self._q["queue_by_name"], {"name": queue}, binary=True)
            if await cursor.fetchone() is None:
                return None
            cursor = await conn.execute(self._q["peek"], {"queue": queue, "limit": limit}, binary=True)
            return await cursor.fetchall()

        rows = await self._run(work, repeatable=True)
        if rows is None:
            raise QueueNotFound(queue)
        return [
            StoredMessage(
                id=r[0],
                queue=queue,
                body=r[1],
                content_type=r[2],
                timestamp=r[3],
                attempts=r[4],
                visible_at=r[5],
                leased=r[6],
                dead_letter=_dead_letter(r[7]),
                headers=load_headers(r[8]),
                group=r[9],
            )
            for r in rows
        ]

    async def purge(self, queue: str) -> int:
        exists, purged = await self._fetchone("purge", {"queue": queue})
        if not exists:
            raise QueueNotFound(queue)
        return int(purged)

    async def delete_message(self, queue: str, message_id: str) -> bool:
        async def delete(conn: Conn) -> bool:
            async with conn.transaction():
                params = {"queue": queue, "id": message_id}
                cursor = await conn.execute(self._q["lock_message"], params, binary=True)
                row = await cursor.fetchone()
                if row is None:
                    cursor = await conn.execute(self._q["queue_by_name"], {"name": queue}, binary=True)
                    if await cursor.fetchone() is None:
                        raise QueueNotFound(queue)
                    return False
                if row[0]:
                    raise MessageLeased(queue, message_id)
                await conn.execute(self._q["delete_message"], params | {"channel": self.channel}, binary=True)
                return True

        return await self._run(delete)

    async def move_messages(self, source: str, destination: str, limit: int | None) -> int:
        params = {"source": source, "destination": destination, "limit": limit, "channel": self.channel}
        has_source, has_destination, moved, _ = await self._fetchone("move", params)
        if not has_source:
            raise QueueNotFound(source)
        if not has_destination:
            raise QueueNotFound(destination)
        return int(moved)

    async def sweep(self) -> int:
        removed = 0
        while True:
            swept = await self._rowcount("sweep", {"limit": SWEEP_CHUNK})
            removed += swept
            if swept < SWEEP_CHUNK:  # then every queue had fewer than a chunk left
                await self._rowcount("sweep_dedup", {})
                return removed


async def _configure(conn: Conn) -> None:
    """Session settings of every pooled connection (never of a caller's connection)."""
    # A lease (and peek, move) must walk the ready index in order. With stale statistics, say a
    # queue that just filled up before autovacuum's ANALYZE, the planner would sort the whole backlog.
    await conn.execute("SET enable_sort = off")
    # psycopg prepares a statement on its 5th run; the good plan of ours never depends on parameter
    # values (a queue name, a batch's arrays), so plan each once instead of at every call.
    await conn.execute("SET plan_cache_mode = force_generic_plan")
    # Short statements: compiling one with JIT (its estimates inflated by stale statistics) can
    # take longer than running it a thousand times.
    await conn.execute("SET jit = off")


def _column(values: list[Any]) -> list[Any] | None:
    """An optional column of the send statement's `unnest`: NULL when every value is (unnest pads
    a NULL array with NULLs, as it pads a shorter one), which spares the client dumping an array of
    NULLs per column (most sends have no delay, dead letter, dedup id, headers or group)."""
    return None if all(value is None for value in values) else values


def _json(info: DeadLetterInfo) -> str:
    return json.dumps(info.to_dict())


def _consume_result(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.debug("checking pooled connections failed", exc_info=task.exception())
