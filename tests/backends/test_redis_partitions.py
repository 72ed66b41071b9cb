"""Partitioned queues on Redis and Redis Cluster (conveyor/backends/redis/backend.py): where the
partitions' keys live, how a lease token names its partition, wake-ups from every partition,
and a queue made again with another partition count. The semantics every engine shares are in
test_contract_partitions.py."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from conveyor.backends.partitioning import place
from conveyor.core.ids import new_message_id
from conveyor.types import Lease, LeasedMessage, Outcomes, OutgoingMessage, QueueSettings
from tests.support.engines import unique_name
from tests.support.redis_cluster import check_redis_binaries, delete_keys, shared_cluster
from tests.support.services import REDIS_HOST, REDIS_PORT, REDIS_URL, need, port_open

redis = pytest.importorskip("redis.asyncio", reason="the Redis engine needs: pip install 'conveyor[redis]'")

from redis.asyncio.cluster import RedisCluster  # noqa: E402

from conveyor.backends.redis.backend import RedisBackend  # noqa: E402


@contextlib.asynccontextmanager
async def connected(url: str) -> AsyncIterator[RedisBackend]:
    backend = RedisBackend(url)
    await backend.connect()
    try:
        yield backend
    finally:
        await backend.close()


@pytest.fixture
async def standalone() -> AsyncIterator[str]:
    """A key prefix of this test's own on the machine's Redis; its keys deleted after."""
    need("Redis", port_open(REDIS_HOST, REDIS_PORT), f"nothing listens on {REDIS_HOST}:{REDIS_PORT}")
    prefix = unique_name()
    yield prefix
    await delete_keys([REDIS_PORT], prefix)


@pytest.fixture
async def cluster() -> AsyncIterator[tuple[str, str]]:
    """(URL, prefix) on the session's local 3-master Redis Cluster."""
    check_redis_binaries()
    shared = shared_cluster()
    prefix = unique_name()
    yield f"{shared.url}&prefix={prefix}", prefix
    await delete_keys(shared.ports, prefix)


def lease_of(leased: LeasedMessage) -> Lease:
    message_id, token = leased.lease_id.split(".")
    return message_id, token, 0


def message(queue: str, body: bytes = b"{}", group: str | None = None) -> OutgoingMessage:
    return OutgoingMessage(queue, new_message_id(), body, "json", group=group)


async def keys_of(client: Any, prefix: str) -> set[str]:
    return {key.decode() async for key in client.scan_iter(match=f"*{prefix}*", count=1000)}


async def test_a_queue_of_one_partition_keeps_its_one_hash_tag(standalone: str) -> None:
    async with connected(f"{REDIS_URL}?prefix={standalone}") as backend:
        await backend.create_queue("plain", QueueSettings(), exist_ok=False)
        await backend.send_many([message("plain", group="g"), message("plain")])
        client = redis.Redis.from_url(REDIS_URL)
        try:
            keys = await keys_of(client, f"{standalone}:plain")
        finally:
            await client.aclose()
    assert keys and all(key.startswith(f"{{{standalone}:plain}}:") for key in keys)


async def test_each_partition_has_its_tag_and_holds_what_is_placed_in_it(standalone: str) -> None:
    async with connected(f"{REDIS_URL}?prefix={standalone}") as backend:
        await backend.create_queue("clicks", QueueSettings(partitions=8), exist_ok=False)
        sent = [message("clicks", group=f"user-{n}" if n % 2 else None) for n in range(40)]
        await backend.send_many(sent)
        client = redis.Redis.from_url(REDIS_URL)
        try:
            for m in sent:
                partition = place(m.group, None, m.id, 8)
                tag = f"{standalone}:clicks" if partition == 0 else f"{standalone}:clicks#p{partition}"
                assert await client.hexists(f"{{{tag}}}:msgs", m.id)
            metas = [f"{{{standalone}:clicks#p{p}}}:meta" for p in range(1, 8)]
            assert [int(await client.hget(meta, "parts")) for meta in metas] == [8] * 7
            # every partition's wake-ups go to the one list consumers block on
            assert await client.llen(f"{{{standalone}:clicks}}:wake") > 0
            assert not await client.exists(*(f"{{{standalone}:clicks#p{p}}}:wake" for p in range(1, 8)))
        finally:
            await client.aclose()
        assert await backend.delete_queue("clicks")
        client = redis.Redis.from_url(REDIS_URL)
        try:
            assert await keys_of(client, f"{standalone}:clicks") == set()
        finally:
            await client.aclose()


async def test_a_lease_token_names_its_partition_and_a_forged_one_is_stale(standalone: str) -> None:
    async with connected(f"{REDIS_URL}?prefix={standalone}") as backend:
        await backend.create_queue("clicks", QueueSettings(partitions=4), exist_ok=False)
        sent = [message("clicks") for _ in range(8)]
        await backend.send_many(sent)
        leased = await backend.lease_many("clicks", 8, 30)
        placed = {m.id: place(None, None, m.id, 4) for m in sent}
        for m in leased:
            assert m.lease_id.endswith(f"p{placed[m.id]}")
        first, *rest = leased
        token = first.lease_id.split(".")[1]
        forged = token.rpartition("p")[0] + "p9"  # a partition the queue does not have
        statuses = await backend.settle(
            "clicks",
            Outcomes(acks=[(first.id, forged, 0), *((m.id, m.lease_id.split(".")[1], 0) for m in rest)]),
        )
        assert statuses == [False] + [True] * 7
        assert (await backend.stats("clicks")).in_flight == 1


async def test_a_queue_made_again_with_another_count_is_placed_for_its_new_count(standalone: str) -> None:
    url = f"{REDIS_URL}?prefix={standalone}"
    async with connected(url) as old, connected(url) as other:
        await old.create_queue("jobs", QueueSettings(), exist_ok=False)
        await old.send_many([message("jobs")])  # `old` knows "jobs" as one partition
        await other.delete_queue("jobs")
        await other.create_queue("jobs", QueueSettings(partitions=4), exist_ok=False)
        sent = [message("jobs", group=f"g{n}") for n in range(8)]
        await old.send_many(sent)
        client = redis.Redis.from_url(REDIS_URL)
        try:
            for m in sent:
                partition = place(m.group, None, m.id, 4)
                tag = f"{standalone}:jobs" if partition == 0 else f"{standalone}:jobs#p{partition}"
                assert await client.hexists(f"{{{tag}}}:msgs", m.id)
        finally:
            await client.aclose()
        assert len(await old.lease_many("jobs", 10, 30)) == 8


async def test_a_partitioned_queue_spreads_over_the_masters_of_a_cluster(cluster: tuple[str, str]) -> None:
    url, prefix = cluster
    async with connected(url) as backend:
        assert backend.cluster
        await backend.create_queue("clicks", QueueSettings(partitions=8), exist_ok=False)
        sent = [message("clicks") for _ in range(64)]
        await backend.send_many(sent)
        client = backend.client
        assert isinstance(client, RedisCluster)
        tags = [f"{prefix}:clicks"] + [f"{prefix}:clicks#p{p}" for p in range(1, 8)]
        nodes = [client.get_node_from_key(f"{{{tag}}}:meta") for tag in tags]
        masters = {node.name for node in nodes if node is not None}
        assert len(masters) >= 2
        # a send into another partition wakes the consumers blocked on partition 0's list
        assert await client.llen(f"{{{prefix}:clicks}}:wake") > 0  # type: ignore[misc]
        leased = await backend.lease_many("clicks", 100, 30)
        assert sorted(m.id for m in leased) == sorted(m.id for m in sent)
        statuses = await backend.settle(
            "clicks", Outcomes(acks=[(m.id, m.lease_id.split(".")[1], 0) for m in leased])
        )
        assert statuses == [True] * 64
        assert (await backend.stats("clicks")).total == 0


async def test_a_partition_left_by_a_deleted_queue_is_not_the_new_queues(standalone: str) -> None:
    async with connected(f"{REDIS_URL}?prefix={standalone}") as backend:
        await backend.create_queue("jobs", QueueSettings(partitions=4), exist_ok=False)
        old = [message("jobs") for _ in range(12)]
        await backend.send_many(old)
        await backend.delete_queue("jobs")
        client = redis.Redis.from_url(REDIS_URL)
        try:  # as if a send had made partition 2 again while the delete ran
            await client.hset(
                f"{{{standalone}:jobs#p2}}:meta",
                mapping={"created": "1", "parts": "4", "paused": "0", "bytes": "2"},
            )
            await client.hset(f"{{{standalone}:jobs#p2}}:msgs", "stale", "json:1:0:{}")
            await client.zadd(f"{{{standalone}:jobs#p2}}:ready", {"stale": 1})
        finally:
            await client.aclose()
        await backend.create_queue("jobs", QueueSettings(partitions=4), exist_ok=False)
        stats = await backend.stats("jobs")
        assert (stats.total, stats.bytes) == (0, 0)
        assert await backend.lease_many("jobs", 10, 30) == []
