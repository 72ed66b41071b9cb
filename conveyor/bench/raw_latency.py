"""The raw latency floor: what a plain client pays from an insert to a consumer holding the row.

The same pace as conveyor's latency case (LATENCY_RATE msg/s, producer and consumer in one
process), with the leanest wake-up each engine offers: PostgreSQL commits the insert with a
`pg_notify` and the consumer, woken by LISTEN, takes it with one `DELETE … RETURNING`; Redis
blocks in `XREADGROUP … BLOCK`, so the message itself is the wake-up; SQLite has no
notifications, so the producer wakes the consumer in process after its commit, as conveyor's
SQLite engine does. No lease, no settle: this is the floor the engine and the machine set.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import statistics
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from conveyor.bench.engines import POSTGRES_URL, REDIS_HOST, REDIS_PORT, Storage
from conveyor.bench.modes import BULK, LATENCY_RATE

P50 = "raw_latency_p50_ms"
P99 = "raw_latency_p99_ms"
# How long the consumer may take for the last message before the case gives up.
GRACE_SECONDS = 10.0

# A producer of message n, and a consumer that records each message's delay until it returns.
Produce = Callable[[int], Awaitable[None]]


def measure(storage: Storage, count: int) -> dict[str, float]:
    kind = storage.engine.kind
    runs = {"sqlite": _sqlite, "postgres": _postgres, "redis": _redis, "nats": _nats}
    if kind not in runs:
        return {}
    delays = asyncio.run(runs[kind](storage, count))
    cuts = statistics.quantiles(delays, n=100, method="inclusive")
    return {P50: cuts[49] * 1000, P99: cuts[98] * 1000}


async def paced(count: int, produce: Produce, sent: dict[int, float]) -> None:
    """Call `produce(n)` for n in range(count) at LATENCY_RATE a second, noting when each began."""
    started = time.perf_counter()
    for n in range(count):
        pause = started + n / LATENCY_RATE - time.perf_counter()
        if pause > 0:
            await asyncio.sleep(pause)
        sent[n] = time.perf_counter()
        await produce(n)


def _body(n: int) -> bytes:
    return json.dumps({"n": n}).encode()


async def _sqlite(storage: Storage, count: int) -> list[float]:
    conn = sqlite3.connect(storage.raw_sqlite_path(), isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute(f"PRAGMA synchronous = {storage.engine.synchronous.upper()}")
    conn.execute("CREATE TABLE IF NOT EXISTS raw_latency (seq INTEGER PRIMARY KEY, body BLOB NOT NULL)")
    conn.execute("DELETE FROM raw_latency")
    sent: dict[int, float] = {}
    delays: list[float] = []
    wake = asyncio.Event()

    async def produce(n: int) -> None:
        conn.execute("INSERT INTO raw_latency (body) VALUES (?)", (_body(n),))
        wake.set()

    async def consume() -> None:
        while len(delays) < count:
            await wake.wait()
            wake.clear()
            rows = conn.execute(
                "DELETE FROM raw_latency WHERE seq IN (SELECT seq FROM raw_latency ORDER BY seq LIMIT ?)"
                " RETURNING body",
                (BULK,),
            ).fetchall()
            now = time.perf_counter()
            delays.extend(now - sent[json.loads(body)["n"]] for (body,) in rows)

    try:
        await _run(count, produce, consume, sent)
    finally:
        conn.close()
    return delays


async def _postgres(storage: Storage, count: int) -> list[float]:
    import psycopg

    table = f'"{storage.raw_name}".raw_latency'
    channel = f"{storage.raw_name}_latency"
    connect = psycopg.AsyncConnection.connect
    producer = await connect(POSTGRES_URL, autocommit=True)
    taker = await connect(POSTGRES_URL, autocommit=True)
    listener = await connect(POSTGRES_URL, autocommit=True)
    sent: dict[int, float] = {}
    delays: list[float] = []
    try:
        await producer.execute(f'CREATE SCHEMA IF NOT EXISTS "{storage.raw_name}"')
        await producer.execute(f"CREATE TABLE IF NOT EXISTS {table} (id bigserial PRIMARY KEY, body bytea)")
        await producer.execute(f"TRUNCATE {table}")
        await listener.execute(f'LISTEN "{channel}"')
        insert = f"WITH i AS (INSERT INTO {table} (body) VALUES (%s)) SELECT pg_notify(%s, '')"
        take = (
            f"DELETE FROM {table} WHERE id IN "
            f"(SELECT id FROM {table} ORDER BY id LIMIT {BULK} FOR UPDATE SKIP LOCKED) RETURNING body"
        )

        async def produce(n: int) -> None:
            await producer.execute(insert, (_body(n), channel))

        async def consume() -> None:
            async for _ in listener.notifies():
                rows = await (await taker.execute(take)).fetchall()
                now = time.perf_counter()
                delays.extend(now - sent[json.loads(body)["n"]] for (body,) in rows)
                if len(delays) >= count:
                    return

        await _run(count, produce, consume, sent)
        await producer.execute(f"DROP TABLE {table}")
    finally:
        for conn in (producer, taker, listener):
            await conn.close()
    return delays


async def _redis(storage: Storage, count: int) -> list[float]:
    import redis.asyncio as aredis

    producer = aredis.Redis(host=REDIS_HOST, port=REDIS_PORT)
    consumer = aredis.Redis(host=REDIS_HOST, port=REDIS_PORT)
    key = f"{storage.raw_name}:latency"
    sent: dict[int, float] = {}
    delays: list[float] = []
    try:
        await producer.delete(key)
        await producer.xgroup_create(key, "g", id="0", mkstream=True)

        async def produce(n: int) -> None:
            await producer.xadd(key, {"b": _body(n)})

        async def consume() -> None:
            while len(delays) < count:
                reply = await consumer.xreadgroup("g", "c", {key: ">"}, count=BULK, block=1000)
                now = time.perf_counter()
                entries = reply[0][1] if reply else []
                delays.extend(now - sent[json.loads(fields[b"b"])["n"]] for _, fields in entries)
                if entries:
                    await consumer.xack(key, "g", *[entry_id for entry_id, _ in entries])

        await _run(count, produce, consume, sent)
    finally:
        await producer.delete(key)
        await producer.aclose()
        await consumer.aclose()
    return delays


async def _nats(storage: Storage, count: int) -> list[float]:
    import nats
    from nats.aio.msg import Msg
    from nats.js.api import AckPolicy, ConsumerConfig, StorageType

    producer = await nats.connect(storage.nats_servers)
    consumer = await nats.connect(storage.nats_servers)
    js = producer.jetstream(timeout=10)
    stream = f"{storage.nats_prefix}_raw_latency"
    subject = f"{storage.nats_prefix}.raw.latency"
    sent: dict[int, float] = {}
    delays: list[float] = []
    done = asyncio.Event()
    try:
        await js.add_stream(
            name=stream, subjects=[subject], storage=StorageType.FILE, num_replicas=storage.engine.replicas
        )

        async def on_message(message: Msg) -> None:
            delays.append(time.perf_counter() - sent[json.loads(message.data)["n"]])
            if len(delays) >= count:
                done.set()

        # a push consumer: the stored message itself is the wake-up
        await consumer.jetstream().subscribe(
            subject, stream=stream, cb=on_message, config=ConsumerConfig(ack_policy=AckPolicy.NONE)
        )

        async def produce(n: int) -> None:
            await js.publish(subject, _body(n))

        async def consume() -> None:
            await done.wait()

        await _run(count, produce, consume, sent)
        await js.delete_stream(stream)
    finally:
        await consumer.close()
        await producer.close()
    return delays


async def _run(
    count: int, produce: Produce, consume: Callable[[], Coroutine[Any, Any, None]], sent: dict[int, float]
) -> None:
    consumer = asyncio.create_task(consume())
    await asyncio.sleep(0.2)  # let the consumer start waiting
    try:
        await paced(count, produce, sent)
        await asyncio.wait_for(asyncio.shield(consumer), GRACE_SECONDS)
    finally:
        consumer.cancel()
