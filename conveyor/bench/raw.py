"""Raw ceilings: the best a plain Python client does on each engine, single process, no framework.

Each client does the same job conveyor does, minus everything conveyor adds: serialise the body
with `json.dumps`, insert it one by one (one transaction each) or 100 at a time (one round trip),
and drain 100 at a time (one round trip that takes and deletes them) decoding each with
`json.loads`. The tables are the leanest a queue can have (a sequence and a body), so the
ceiling is honest: conveyor also stores an id, a lease, a visibility time and indexes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from conveyor.bench.body import click
from conveyor.bench.engines import POSTGRES_URL, REDIS_HOST, REDIS_PORT, Storage
from conveyor.bench.modes import BULK, Mode

# case name -> msg/s of one repeat
Rates = dict[str, float]

INSERT_ONE = "raw_insert_one"
INSERT_BATCH = "raw_insert_batch100"
DRAIN_BATCH = "raw_drain_batch100"
CASES = (INSERT_ONE, INSERT_BATCH, DRAIN_BATCH)


def _dumps(n: int) -> bytes:
    return json.dumps(click(n), separators=(",", ":")).encode()


def _chunks(total: int) -> Iterator[range]:
    for start in range(0, total, BULK):
        yield range(start, min(start + BULK, total))


def _rate(count: int, run: Callable[[], int | None]) -> float:
    started = time.perf_counter()
    done = run()
    elapsed = time.perf_counter() - started
    return (count if done is None else done) / elapsed


async def _async_rate(count: int, run: Callable[[], Awaitable[int | None]]) -> float:
    started = time.perf_counter()
    done = await run()
    elapsed = time.perf_counter() - started
    return (count if done is None else done) / elapsed


def measure(storage: Storage, mode: Mode) -> Rates:
    kind = storage.engine.kind
    if kind == "sqlite":
        return sqlite_ceiling(storage, mode)
    if kind == "postgres":
        return postgres_ceiling(storage, mode)
    if kind == "redis":
        return redis_ceiling(storage, mode)
    if kind == "nats":
        return asyncio.run(nats_ceiling(storage, mode))
    return {}


# -- SQLite ------------------------------------------------------------------------------------


def sqlite_ceiling(storage: Storage, mode: Mode) -> Rates:
    conn = sqlite3.connect(storage.raw_sqlite_path(), isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute(f"PRAGMA synchronous = {storage.engine.synchronous.upper()}")
        conn.execute("CREATE TABLE IF NOT EXISTS raw_queue (seq INTEGER PRIMARY KEY, body BLOB NOT NULL)")
        conn.execute("DELETE FROM raw_queue")
        insert = "INSERT INTO raw_queue (body) VALUES (?)"

        def one_by_one() -> None:
            for n in range(mode.one_by_one):
                conn.execute(insert, (_dumps(n),))  # autocommit: one transaction each

        def batches(total: int) -> None:
            for chunk in _chunks(total):
                conn.execute("BEGIN IMMEDIATE")
                conn.executemany(insert, [(_dumps(n),) for n in chunk])
                conn.execute("COMMIT")

        def drain() -> int:
            taken = 0
            while True:
                rows = conn.execute(
                    "DELETE FROM raw_queue WHERE seq IN (SELECT seq FROM raw_queue ORDER BY seq LIMIT ?)"
                    " RETURNING seq, body",
                    (BULK,),
                ).fetchall()
                if not rows:
                    return taken
                taken += len([json.loads(body) for _, body in rows])

        rates = {INSERT_ONE: _rate(mode.one_by_one, one_by_one)}
        rates[INSERT_BATCH] = _rate(mode.batched, lambda: batches(mode.batched))
        conn.execute("DELETE FROM raw_queue")
        batches(mode.drained)
        rates[DRAIN_BATCH] = _rate(mode.drained, drain)
        return rates
    finally:
        conn.close()


# -- PostgreSQL --------------------------------------------------------------------------------


def postgres_ceiling(storage: Storage, mode: Mode) -> Rates:
    import psycopg

    schema = storage.raw_name
    table = f'"{schema}".raw_queue'
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        conn.execute(f"CREATE TABLE IF NOT EXISTS {table} (id bigserial PRIMARY KEY, body bytea NOT NULL)")
        conn.execute(f"TRUNCATE {table}")
        insert_one = f"INSERT INTO {table} (body) VALUES (%s)"
        insert_many = f"INSERT INTO {table} (body) SELECT unnest(%s::bytea[])"
        take = (
            f"DELETE FROM {table} WHERE id IN "
            f"(SELECT id FROM {table} ORDER BY id LIMIT {BULK} FOR UPDATE SKIP LOCKED) RETURNING body"
        )

        def one_by_one() -> None:
            for n in range(mode.one_by_one):
                conn.execute(insert_one, (_dumps(n),))

        def batches(total: int) -> None:
            for chunk in _chunks(total):
                conn.execute(insert_many, ([_dumps(n) for n in chunk],))

        def drain() -> int:
            taken = 0
            while True:
                rows = conn.execute(take).fetchall()
                if not rows:
                    return taken
                taken += len([json.loads(body) for (body,) in rows])

        rates = {INSERT_ONE: _rate(mode.one_by_one, one_by_one)}
        rates[INSERT_BATCH] = _rate(mode.batched, lambda: batches(mode.batched))
        conn.execute(f"TRUNCATE {table}")
        batches(mode.drained)
        rates[DRAIN_BATCH] = _rate(mode.drained, drain)
        return rates


# -- Redis -------------------------------------------------------------------------------------


def redis_ceiling(storage: Storage, mode: Mode) -> Rates:
    import redis

    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT)
    key = f"{storage.raw_name}:stream"
    try:
        client.delete(key)

        def one_by_one() -> None:
            for n in range(mode.one_by_one):
                client.xadd(key, {"b": _dumps(n)})

        def batches(total: int) -> None:
            for chunk in _chunks(total):
                pipe = client.pipeline(transaction=False)
                for n in chunk:
                    pipe.xadd(key, {"b": _dumps(n)})
                pipe.execute()

        def drain() -> int:
            taken = 0
            while True:
                reply: Any = client.xreadgroup("g", "c", {key: ">"}, count=BULK)
                entries = reply[0][1] if reply else []
                if not entries:
                    return taken
                ids = [entry_id for entry_id, _ in entries]
                taken += len([json.loads(fields[b"b"]) for _, fields in entries])
                pipe = client.pipeline(transaction=False)
                pipe.xack(key, "g", *ids)
                pipe.xdel(key, *ids)
                pipe.execute()

        rates = {INSERT_ONE: _rate(mode.one_by_one, one_by_one)}
        rates[INSERT_BATCH] = _rate(mode.batched, lambda: batches(mode.batched))
        client.delete(key)
        batches(mode.drained)
        client.xgroup_create(key, "g", id="0")
        rates[DRAIN_BATCH] = _rate(mode.drained, drain)
        return rates
    finally:
        client.delete(key)
        client.close()


# -- NATS JetStream ----------------------------------------------------------------------------


async def nats_ceiling(storage: Storage, mode: Mode) -> Rates:
    """A work-queue stream (file storage, the engine's replicas): `js.publish` waiting for each
    PubAck; 100 `publish_async` then their PubAcks; a durable pull consumer that fetches 100 and
    acks each (a work queue takes explicit acks only; an ack is a publish that waits for nothing)."""
    import nats
    import nats.js.errors
    from nats.js import JetStreamContext
    from nats.js.api import AckPolicy, ConsumerConfig, RetentionPolicy, StorageType

    nc = await nats.connect(storage.nats_servers)
    js = nc.jetstream(timeout=10)
    stream = f"{storage.nats_prefix}_raw_queue"
    subject = f"{storage.nats_prefix}.raw.queue"

    async def fresh_stream() -> None:
        with contextlib.suppress(nats.js.errors.NotFoundError):
            await js.delete_stream(stream)
        await js.add_stream(
            name=stream,
            subjects=[subject],
            retention=RetentionPolicy.WORK_QUEUE,
            storage=StorageType.FILE,
            num_replicas=storage.engine.replicas,
        )

    async def one_by_one() -> None:
        for n in range(mode.one_by_one):
            await js.publish(subject, _dumps(n))

    async def batches(total: int) -> None:
        for chunk in _chunks(total):
            acks = [await js.publish_async(subject, _dumps(n)) for n in chunk]
            await asyncio.gather(*acks)

    async def drain(consumer: JetStreamContext.PullSubscription) -> int:
        taken = 0
        while taken < mode.drained:
            messages = await consumer.fetch(BULK, timeout=10)
            taken += len([json.loads(message.data) for message in messages])
            for message in messages:
                await message.ack()
        return taken

    try:
        await fresh_stream()
        rates = {INSERT_ONE: await _async_rate(mode.one_by_one, one_by_one)}
        rates[INSERT_BATCH] = await _async_rate(mode.batched, lambda: batches(mode.batched))
        await fresh_stream()
        await batches(mode.drained)
        config = ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, max_ack_pending=-1)
        consumer = await js.pull_subscribe(subject, durable="raw", stream=stream, config=config)
        rates[DRAIN_BATCH] = await _async_rate(mode.drained, lambda: drain(consumer))
        return rates
    finally:
        try:
            await js.delete_stream(stream)
        finally:
            await nc.close()


# -- the asyncio clients' one-by-one insert ------------------------------------------------------


async def async_insert_one(storage: Storage, count: int) -> float | None:
    """The raw one-by-one insert from an asyncio client (redis.asyncio XADD, psycopg's
    AsyncConnection INSERT in autocommit), on the tables and keys of the ceilings above: what an
    event loop's round trip costs a lone `await send` before any framework. None for an engine
    whose raw client is already asyncio (NATS) or has none (SQLite)."""
    kind = storage.engine.kind
    if kind == "redis":
        import redis.asyncio as aioredis

        client = aioredis.Redis(host=REDIS_HOST, port=REDIS_PORT)
        key = f"{storage.raw_name}:async"
        try:

            async def redis_one_by_one() -> None:
                for n in range(count):
                    await client.xadd(key, {"b": _dumps(n)})

            return await _async_rate(count, redis_one_by_one)
        finally:
            await client.delete(key)
            await client.aclose()
    if kind == "postgres":
        import psycopg

        table = f'"{storage.raw_name}".raw_async'
        async with await psycopg.AsyncConnection.connect(POSTGRES_URL, autocommit=True) as conn:
            await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{storage.raw_name}"')
            await conn.execute(
                f"CREATE TABLE IF NOT EXISTS {table} (id bigserial PRIMARY KEY, body bytea NOT NULL)"
            )
            insert = f"INSERT INTO {table} (body) VALUES (%s)"

            async def postgres_one_by_one() -> None:
                for n in range(count):
                    await conn.execute(insert, (_dumps(n),))

            try:
                return await _async_rate(count, postgres_one_by_one)
            finally:
                await conn.execute(f"DROP TABLE {table}")
    return None
