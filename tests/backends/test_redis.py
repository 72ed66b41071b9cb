"""What only the Redis engine has to show: URL options, key layout, blocking wake-ups, surviving a
restart, and the two-phase moves across Redis Cluster slots. The shared semantics are in the
conformance suites (run with `-k redis`, on one server and on a local cluster)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

import conveyor
from conveyor.core.ids import new_message_id
from conveyor.errors import BackendUnavailable, InvalidURL
from conveyor.types import DeadLetter, OutgoingMessage, QueueSettings, Settlement
from tests.support.engines import unique_name
from tests.support.redis_cluster import RedisServer, check_redis_binaries, delete_cluster_keys, redis_cluster
from tests.support.services import REDIS_URL, need

__all__ = ["redis_cluster"]  # the fixture, used by name below

redis = pytest.importorskip("redis.asyncio", reason="the Redis engine needs: pip install 'conveyor[redis]'")

from redis.exceptions import ConnectionError as RedisConnectionError  # noqa: E402

from conveyor.backends.redis import send_line  # noqa: E402
from conveyor.backends.redis.backend import RedisBackend, parse_redis_url  # noqa: E402


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A standalone redis-server of this test's own, which it may stop and restart."""
    check_redis_binaries()
    server = RedisServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@contextlib.asynccontextmanager
async def connected(url: str) -> AsyncIterator[RedisBackend]:
    backend = RedisBackend(url)
    await backend.connect()
    try:
        yield backend
    finally:
        await backend.close()


async def command_calls(port: int) -> dict[str, int]:
    """How many times the server ran each command (those run inside scripts too)."""
    client = redis.Redis(host="127.0.0.1", port=port)
    try:
        stats = await client.info("commandstats")
    finally:
        await client.aclose()
    return {name.removeprefix("cmdstat_"): int(entry["calls"]) for name, entry in stats.items()}


# -- URL ----------------------------------------------------------------------------------------


def test_conveyor_options_are_taken_out_of_the_url_given_to_redis_py() -> None:
    parsed = parse_redis_url("rediss://u:secret@example.com:6380/2?prefix=app.one&cluster=0&socket_timeout=3")
    assert parsed.client_url == "rediss://u:secret@example.com:6380/2?socket_timeout=3"
    assert (parsed.prefix, parsed.cluster, parsed.where) == ("app.one", False, "example.com:6380")
    assert parse_redis_url("redis://localhost").prefix == "conveyor"
    assert parse_redis_url("redis://localhost").cluster is None


@pytest.mark.parametrize("query", ["prefix=has{brace}", "prefix=", "cluster=maybe"])
def test_a_bad_option_is_an_invalid_url_that_hides_the_password(query: str) -> None:
    with pytest.raises(InvalidURL) as raised:
        parse_redis_url(f"redis://user:hunter2@localhost/0?{query}")
    assert "hunter2" not in str(raised.value)


async def test_an_unreachable_server_is_backend_unavailable_without_the_password(tmp_path: Path) -> None:
    closed_port = RedisServer(tmp_path).port  # free, nothing listens
    backend = RedisBackend(f"redis://user:hunter2@127.0.0.1:{closed_port}/0?cluster=0")
    with pytest.raises(BackendUnavailable) as raised:
        await backend.connect()
    assert "hunter2" not in str(raised.value)
    assert str(closed_port) in str(raised.value)


# -- keys on the shared server ----------------------------------------------------------------------


@pytest.fixture
async def shared_url() -> AsyncIterator[str]:
    need("Redis", await _reachable(REDIS_URL), f"nothing answers at {REDIS_URL}")
    prefix = unique_name()
    yield f"{REDIS_URL}?prefix={prefix}"
    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = [key async for key in client.scan_iter(match=f"*{prefix}*", count=1000)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


async def _reachable(url: str) -> bool:
    client = redis.Redis.from_url(url)
    try:
        return bool(await client.ping())
    except RedisConnectionError:
        return False
    finally:
        await client.aclose()


async def test_every_key_carries_the_prefix_and_a_queue_keeps_to_one_hash_tag(shared_url: str) -> None:
    prefix = parse_redis_url(shared_url).prefix
    async with conveyor.App(shared_url) as app:
        await app.queue("orders").send_batch([{"n": 1}, {"n": 2}])
        await app.backend.add_subscription("topic", "orders", None)
        [pulled, _] = await app.queue("orders").pull(batch_size=2)
        await app.queue("orders").ack(acks=[pulled.lease_id])
        client = redis.Redis.from_url(REDIS_URL)
        try:
            keys = sorted([key.decode() async for key in client.scan_iter(match=f"*{prefix}*")])
        finally:
            await client.aclose()
    queue_keys = [key for key in keys if key.startswith(f"{{{prefix}:orders}}:")]
    assert {"meta", "msgs", "state", "inflight", "age"} <= {key.rsplit(":", 1)[1] for key in queue_keys}
    assert set(keys) - set(queue_keys) == {f"{{{prefix}}}:queues", f"{{{prefix}}}:subscriptions"}


async def test_a_message_state_of_the_release_before_lost_counts_is_read_in_place(shared_url: str) -> None:
    prefix = parse_redis_url(shared_url).prefix
    async with conveyor.App(shared_url) as app:
        message_id = await app.queue("jobs").send({"n": 1})
        await app.queue("jobs").pull(visibility_timeout=0.3)
        client = redis.Redis.from_url(REDIS_URL)
        try:  # as a worker of that release left it: "<deliveries>:<size>:<hex token>"
            key = f"{{{prefix}:jobs}}:state"
            attempts, size, _lost, _token = (await client.hget(key, message_id)).decode().split(":")
            await client.hset(key, message_id, f"{attempts}:{size}:{uuid.uuid4().hex}")
        finally:
            await client.aclose()
        await asyncio.sleep(0.5)  # its lease expires: a delivery without an outcome
        backend = await app.core.connected()
        [again] = await backend.lease_many("jobs", 1, 30)
    assert (again.id, again.attempts, again.lost) == (message_id, 2, 1)


async def test_deleting_a_queue_leaves_none_of_its_keys(shared_url: str) -> None:
    prefix = parse_redis_url(shared_url).prefix
    async with conveyor.App(shared_url) as app:
        await app.queue("gone").send({"n": 1}, delay_seconds=60)
        await app.queue("gone").send({"n": 2})
        await app.queue("gone").pull()
        assert await app.delete_queue("gone")
    client = redis.Redis.from_url(REDIS_URL)
    try:
        left = [key async for key in client.scan_iter(match=f"{{{prefix}:gone}}*")]
    finally:
        await client.aclose()
    assert left == []


async def test_a_repeated_write_of_one_message_id_stores_it_once(shared_url: str) -> None:
    async with connected(shared_url) as backend:
        await backend.create_queue("q", QueueSettings(), exist_ok=False)
        message = OutgoingMessage("q", new_message_id(), b'{"n":1}', "json")
        await backend.send_many([message])
        await backend.send_many([message])
        assert (await backend.stats("q")).backlog == 1


async def test_a_send_from_another_connection_wakes_a_blocked_waiter(shared_url: str) -> None:
    async with connected(shared_url) as consumer, connected(shared_url) as producer:
        await producer.create_queue("wake", QueueSettings(), exist_ok=False)
        waiter = asyncio.create_task(consumer.wait_for_messages("wake", 60))
        await asyncio.sleep(0.1)
        assert not waiter.done()
        await producer.send_many([OutgoingMessage("wake", new_message_id(), b"{}", "json")])
        async with asyncio.timeout(10):
            await waiter


async def test_a_waiter_wakes_when_a_delayed_message_comes_due(shared_url: str) -> None:
    async with connected(shared_url) as backend:
        await backend.create_queue("later", QueueSettings(), exist_ok=False)
        await backend.send_many([OutgoingMessage("later", new_message_id(), b"{}", "json", 0.3)])
        async with asyncio.timeout(10):  # each wait is bounded by the due time, not by its 60 s
            while not await backend.lease_many("later", 10, 30):
                await backend.wait_for_messages("later", 60)


async def test_cancelling_a_wait_cancels_it_whatever_it_is_doing(shared_url: str) -> None:
    """A stopping worker cancels its wait; a swallowed cancellation would sit out the BLPOP."""
    async with connected(shared_url) as backend:
        await backend.create_queue("idle", QueueSettings(), exist_ok=False)
        for step in range(40):  # cancel at many points: script call, connection checks, BLPOP
            waiter = asyncio.create_task(backend.wait_for_messages("idle", 3))
            await asyncio.sleep(step * 0.0001)
            waiter.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiter


# -- a server of our own: no polling, restarts -----------------------------------------------------


async def test_an_idle_wait_blocks_on_the_server_instead_of_polling(own_server: RedisServer) -> None:
    async with connected(f"{own_server.url}/0?prefix=idle") as backend:
        await backend.create_queue("idle", QueueSettings(), exist_ok=False)
        await backend.wait_for_messages("idle", 0.05)  # loads the script, opens the connection
        before = await command_calls(own_server.port)
        await backend.wait_for_messages("idle", 1.0)
        after = await command_calls(own_server.port)
    # one script for the due time, then one BLPOP for the whole second
    assert (after["evalsha"] - before["evalsha"], after["blpop"] - before.get("blpop", 0)) == (1, 1)


async def test_a_worker_reconnects_and_keeps_consuming_after_redis_restarts(own_server: RedisServer) -> None:
    """Persistence is off: what was stored before the restart is gone (documented); the worker is not."""
    seen: asyncio.Queue[object] = asyncio.Queue()
    app = conveyor.App(f"{own_server.url}/0?prefix=restart")

    @app.consumer("jobs", max_batch_timeout=0)
    async def handle(batch: conveyor.MessageBatch, env: conveyor.Env) -> None:
        for message in batch.messages:
            seen.put_nowait(message.body)

    stop = asyncio.Event()
    worker = asyncio.create_task(app.run_consumers(stop=stop))
    try:
        await app.queue("jobs").send({"n": 1})
        assert await asyncio.wait_for(seen.get(), 30) == {"n": 1}
        own_server.stop()
        with pytest.raises(BackendUnavailable):
            await app.queue("jobs").send({"n": "while down"})
        own_server.start()
        await app.queue("jobs").send({"n": 2})  # the queue is created again on first send
        assert await asyncio.wait_for(seen.get(), 30) == {"n": 2}
    finally:
        stop.set()
        await worker
        await app.close()


@pytest.mark.parametrize("idle_check_seconds", [1.0, 0.0])
async def test_sends_on_the_kept_connection_survive_lost_scripts_and_a_dropped_connection(
    own_server: RedisServer, idle_check_seconds: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 0.0: the kept connection is checked before every send, as the pool checks one (it finds the
    # dropped connection before writing); 1.0: the write meets it and is tried again
    monkeypatch.setattr(send_line, "IDLE_CHECK_SECONDS", idle_check_seconds)
    client = redis.Redis(host="127.0.0.1", port=own_server.port)
    try:
        async with conveyor.App(f"{own_server.url}/0?prefix=line") as app:
            queue = app.queue("jobs")
            await queue.send({"n": 1})
            await client.script_flush()  # as after a restart: EVALSHA answers NOSCRIPT
            await queue.send({"n": 2})
            assert await client.client_kill_filter(_type="normal", skipme=True) >= 1
            await queue.send({"n": 3})
            before = await command_calls(own_server.port)
            await queue.send({"n": 4})
            after = await command_calls(own_server.port)
            assert after["evalsha"] - before["evalsha"] == 1  # a lone send: one script call
            assert sorted(message.body["n"] for message in await queue.peek(10)) == [1, 2, 3, 4]
    finally:
        await client.aclose()


async def test_a_lone_send_takes_the_lean_step_and_stores_what_a_batch_stores(
    own_server: RedisServer,
) -> None:
    """A lone message (no group, no dedup id, an unbounded queue of one partition) is stored by
    the send script's lean step, in fewer commands; the record, times, byte count and wake-up it
    leaves are the general step's, and a repeat of its id stores nothing."""
    url = f"{own_server.url}/0?prefix=lone"
    headers = {"trace": "t-1"}
    alone = OutgoingMessage("q", new_message_id(), b'{"n":1}', "json", 30.0, headers=headers)
    batch = [
        OutgoingMessage("q", new_message_id(), b'{"n":1}', "json", 30.0, headers=headers) for _ in range(2)
    ]
    client = redis.Redis(host="127.0.0.1", port=own_server.port)
    try:
        async with connected(url) as backend:
            await backend.create_queue("q", QueueSettings(), exist_ok=False)
            await backend.send_many(batch)
            before = await command_calls(own_server.port)
            await backend.send_many([alone])
            await backend.send_many([alone])  # a repeat after a lost reply: stored once
            after = await command_calls(own_server.port)
            assert after["zmscore"] == before["zmscore"]  # the general step checks ids with ZMSCORE
            assert (await backend.stats("q")).delayed == 3
            records = await client.hgetall("{lone:q}:msgs")
            ready, age = (
                dict(await client.zrange("{lone:q}:ready", 0, -1, withscores=True)),
                dict(await client.zrange("{lone:q}:age", 0, -1, withscores=True)),
            )
            stored = int(await client.hget("{lone:q}:meta", "bytes"))
            tokens = await client.llen("{lone:q}:wake")
    finally:
        await client.aclose()

    def shape(message_id: str) -> tuple[bytes, float]:
        kind, _timestamp, rest = records[message_id.encode()].split(b":", 2)
        key = message_id.encode()
        return kind + b":" + rest, ready[key] - age[key]

    assert shape(alone.id) == shape(batch[0].id)
    # every send wakes, a repeat too (as the general step does), up to the list's four tokens
    assert stored == 3 * len(alone.body) and tokens == 4


# -- Redis Cluster --------------------------------------------------------------------------------


@pytest.fixture
async def cluster_app(redis_cluster: str) -> AsyncIterator[conveyor.App]:
    prefix = unique_name()
    async with conveyor.App(f"{redis_cluster}&prefix={prefix}") as app:
        yield app
    await delete_cluster_keys(redis_cluster, prefix)


def backend_of(app: conveyor.App) -> RedisBackend:
    assert isinstance(app.backend, RedisBackend)
    return app.backend


async def test_a_cluster_is_detected_without_the_cluster_option(redis_cluster: str) -> None:
    async with connected(redis_cluster.replace("?cluster=1", "?prefix=detect")) as backend:
        assert backend.cluster
    need("Redis", await _reachable(REDIS_URL), f"nothing answers at {REDIS_URL}")
    async with connected(REDIS_URL) as backend:
        assert not backend.cluster


async def test_dead_letters_move_to_a_queue_on_another_slot(cluster_app: conveyor.App) -> None:
    backend = backend_of(cluster_app)
    assert backend._slot("work") != backend._slot("work-dlq")
    await cluster_app.create_queue("work-dlq")
    await cluster_app.queue("work").send_batch([{"n": 1}, {"n": 2}])
    pulled = await cluster_app.queue("work").pull(batch_size=2)
    dead = [DeadLetter(message.lease_id, new_message_id(), "boom", "work-dlq", 1) for message in pulled]
    result = await cluster_app.core.settle("work", Settlement(dead_letters=dead))
    assert (result.dead_lettered, result.stale) == (2, [])
    assert (await cluster_app.queue("work").stats()).total == 0
    copies = await cluster_app.queue("work-dlq").peek()
    assert {message.id for message in copies} == {d.new_id for d in dead}
    assert {m.dead_letter.original_id for m in copies if m.dead_letter} == {m.id for m in pulled}


async def test_a_dead_letter_whose_lease_is_lost_mid_move_is_stale_and_not_copied(
    cluster_app: conveyor.App, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = backend_of(cluster_app)
    await cluster_app.create_queue("work-dlq")
    await cluster_app.queue("work").send({"n": 1})
    [pulled] = await cluster_app.queue("work").pull()
    write = backend._write

    async def copy_then_lose_the_lease(by_queue: dict[str, list[object]]) -> None:
        await write(by_queue)  # type: ignore[arg-type]
        await cluster_app.core.release("work", [pulled.lease_id])  # another party takes the message back

    monkeypatch.setattr(backend, "_write", copy_then_lose_the_lease)
    dead = DeadLetter(pulled.lease_id, new_message_id(), "boom", "work-dlq", 1)
    result = await cluster_app.core.settle("work", Settlement(dead_letters=[dead]))
    assert (result.dead_lettered, result.stale) == (0, [pulled.lease_id])
    assert (await cluster_app.queue("work-dlq").stats()).total == 0
    assert (await cluster_app.queue("work").stats()).backlog == 1


async def test_replay_across_slots_keeps_ids_and_a_crash_mid_move_loses_nothing(
    cluster_app: conveyor.App, monkeypatch: pytest.MonkeyPatch
) -> None:
    import conveyor.backends.redis.backend as engine

    backend = backend_of(cluster_app)
    assert backend._slot("jobs") != backend._slot("jobs-dlq")
    await cluster_app.create_queue("jobs-dlq")
    await cluster_app.create_queue("jobs")
    ids = [new_message_id() for _ in range(3)]
    await backend.send_many([OutgoingMessage("jobs-dlq", i, b'{"n":1}', "json") for i in ids])
    assert await cluster_app.replay("jobs-dlq", to="jobs", limit=2) == 2
    assert {m.id for m in await cluster_app.queue("jobs").peek()} == set(ids[:2])

    # the mover dies after copying and before deleting: the copy stands, the original returns
    monkeypatch.setattr(engine, "MOVE_HOLD_SECONDS", 0.3)
    run = backend._run

    async def crash_before_delete(script: str, *args: object) -> object:
        if script == "finish_moves":
            raise BackendUnavailable("the mover crashed")
        return await run(script, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(backend, "_run", crash_before_delete)
    with pytest.raises(BackendUnavailable):
        await cluster_app.replay("jobs-dlq", to="jobs")
    monkeypatch.setattr(backend, "_run", run)
    await asyncio.sleep(0.5)
    assert {m.id for m in await cluster_app.queue("jobs").peek()} == set(ids)
    [back] = await cluster_app.queue("jobs-dlq").pull()
    assert back.id == ids[2]


async def test_dead_letter_details_round_trip_any_text(shared_url: str) -> None:
    error = 'ValueError: "quoted" \\ back/slash\ttab\nnewline é ✓ \x01'
    async with conveyor.App(shared_url) as app:
        await app.create_queue("dlq")
        await app.queue("src").send({"n": 1})
        [pulled] = await app.queue("src").pull()
        dead = DeadLetter(pulled.lease_id, new_message_id(), error, "dlq", 1)
        await app.core.settle("src", Settlement(dead_letters=[dead]))
        [copy] = await app.queue("dlq").peek()
    assert copy.dead_letter is not None
    assert (copy.dead_letter.error, copy.dead_letter.source_queue) == (error, "src")
    # the record's time is the worker's clock, the copy's the server's: the same machine here
    assert copy.dead_letter.dead_lettered_at == pytest.approx(copy.timestamp.timestamp(), abs=5)
