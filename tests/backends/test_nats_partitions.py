"""What only the NATS engine has to show of partitioned queues (docs/nats.md, "Partitions"): a
queue of N partitions is N streams named after it, spread over a cluster's servers; a queue of
one keeps its one stream; every partition's log holds the queue's settings, copied again by the
next reader when a writer stopped half way; a missing partition stream is made again, and one
left from a deleted queue is not taken for the new one's. The shared semantics are in the
conformance suites (test_contract_partitions*.py, which run on the NATS cluster too)."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import conveyor
from conveyor.backends.base import is_ahead
from conveyor.backends.partitioning import place
from conveyor.bench.nats_servers import jetstream_request
from conveyor.types import DeadLetterInfo, DeadLetterMove, Outcomes
from tests.support.apps import TEST_LIMITS
from tests.support.engines import check_nats, nats_storage
from tests.support.services import NATS_PORT

pytest.importorskip("nats", reason="the NATS engine needs: pip install 'conveyor[nats]'")

import nats

from conveyor.backends.nats import partitions, records
from conveyor.backends.nats.records import Outgoing

# -- splitting and joining, without a server ----------------------------------------------------


def test_a_lease_token_names_its_partition_and_a_foreign_one_names_none() -> None:
    for partition in (0, 1, 7):
        token = partitions.lease_token(partition, handed=partition % 2 == 0)
        assert partitions.token_partition(token, 8) == partition
    assert partitions.token_partition(partitions.lease_token(8), 8) is None  # not a partition of 8
    assert partitions.token_partition("0123abcd", 8) == 0  # a token of a queue of one partition


def test_outcomes_split_by_partition_come_back_in_the_order_given() -> None:
    def lease(n: int, partition: int) -> tuple[str, str, int]:
        return f"m{n}", partitions.lease_token(partition), 0

    info = DeadLetterInfo("m4", "q", 1, "boom", 0.0)
    outcomes = Outcomes(
        acks=[lease(0, 2), lease(1, 0), lease(2, 9)],  # partition 9 is none of the queue's
        retries=[(lease(3, 2), 1.0)],
        dead_letters=[DeadLetterMove(lease(4, 1), "new", "dlq", info)],
    )
    parts, count = partitions.split_outcomes(outcomes, 4)
    assert count == 5 and sorted(parts) == [0, 1, 2]
    assert [a[0] for a in parts[2].outcomes.acks] == ["m0"] and parts[2].positions == [0, 3]
    statuses = {
        0: [True],
        1: [True],
        2: [True, False],
    }  # each partition's, acks then retries then dead letters
    joined = partitions.joined(count, [(parts[k].positions, statuses[k]) for k in parts], False)
    assert joined == [True, True, False, False, True]


def test_a_batch_into_a_partitioned_queue_keeps_its_order_in_its_send_times() -> None:
    replayed = Outgoing("r", b"", "json", timestamp=1.0)
    stamped = partitions.stamped([Outgoing(f"m{n}", b"", "json") for n in range(3)] + [replayed], now=100.0)
    step = partitions.SEND_ORDER_STEP_SECONDS
    assert [m.timestamp for m in stamped] == [100.0, 100.0 + step, 100.0 + 2 * step, 1.0]
    assert partitions.rotation(9, 8) == [1, 2, 3, 4, 5, 6, 7, 0]


# -- on the server ----------------------------------------------------------------------------------


@pytest.fixture
async def url(tmp_path: Path) -> AsyncIterator[str]:
    check_nats()
    async with nats_storage(tmp_path) as storage_url:
        yield storage_url


def prefix_of(url: str) -> str:
    return url.split("prefix=")[1].split("&")[0]


async def streams(prefix: str, port: int = NATS_PORT) -> list[str]:
    reply = await jetstream_request(port, "STREAM.NAMES", {"subject": f"{prefix}.>"})
    return sorted(reply.get("streams") or [])


async def messages_in(stream: str, port: int = NATS_PORT) -> int:
    return int((await jetstream_request(port, f"STREAM.INFO.{stream}"))["state"]["messages"])


async def last_meta(stream: str, subject: str, port: int = NATS_PORT) -> dict[str, object]:
    reply = await jetstream_request(port, f"STREAM.MSG.GET.{stream}", {"last_by_subj": subject})
    return dict(records.decode(base64.b64decode(reply["message"]["data"])).header)


async def test_a_queue_of_n_partitions_is_n_streams_named_after_it(url: str) -> None:
    prefix = prefix_of(url)
    async with conveyor.App(url, limits=TEST_LIMITS) as app:
        await app.create_queue("clicks", partitions=4)
        await app.create_queue("plain")
        assert await streams(prefix) == sorted(
            [f"{prefix}_q_clicks", *(f"{prefix}_p{k}_clicks" for k in (1, 2, 3)), f"{prefix}_q_plain"]
        )
        assert [q.name for q in await app.list_queues()] == ["clicks", "plain"]
        await app.queue("clicks").send_batch(list(range(100)))
        # every partition got its share (placement by the random message ids)
        counts = [await messages_in(s) for s in await streams(prefix) if s.endswith("_clicks")]
        assert all(count > 1 for count in counts)  # a settings record and some sends each
        assert (await app.queue("clicks").stats()).backlog == 100
        assert await app.delete_queue("clicks")
        assert await streams(prefix) == [f"{prefix}_q_plain"]


async def test_a_lease_id_names_the_partition_its_lease_was_written_to(url: str) -> None:
    async with conveyor.App(url, limits=TEST_LIMITS) as app:
        await app.create_queue("clicks", partitions=4)
        queue = app.queue("clicks")
        await queue.send_batch([conveyor.SendRequest(n, group=f"g{n}") for n in range(12)])
        leased = await queue.pull(batch_size=12)
        tokens = {m.lease_id.split(".")[1] for m in leased}
        suffixes = {token.rpartition("p")[2] if "p" in token else "0" for token in tokens}
        assert suffixes <= {"0", "1", "2", "3"} and len(suffixes) > 1
        # a lease id naming a partition the queue does not have is stale, like any unknown one
        forged = leased[0].lease_id.split("p")[0] + "p9"
        result = await queue.ack([forged, *(m.lease_id for m in leased)])
        assert (result.ack_count, result.stale) == (12, [forged])


async def test_a_lease_ahead_of_partitions_hands_from_one_that_takes_enough_and_puts_them_first(
    url: str,
) -> None:
    # groups place messages: 2 in partition 0 (fewer than it is asked to hand), 6 in partition 1
    groups = [f"g{n}" for n in range(100)]
    small = [g for g in groups if place(g, None, "", 2) == 0][:2]
    large = [g for g in groups if place(g, None, "", 2) == 1][:6]
    async with conveyor.App(url, limits=TEST_LIMITS) as app:
        await app.create_queue("clicks", partitions=2)
        queue = app.queue("clicks")
        await queue.send_batch([conveyor.SendRequest(g, group=g) for g in small + large])
        leased = await app.backend.lease_ahead("clicks", 8, 30, hand_first=3)
        assert len(leased) == 8
        handed = [m for m in leased if not is_ahead(m.lease_id)]
        assert handed == leased[:3]  # the batch the worker starts at once, whichever partition led
        assert {m.group for m in handed} <= set(large)  # all or none per partition: the large one's
        assert (await queue.ack([m.lease_id for m in handed])).ack_count == 3


async def test_a_settings_change_reaches_every_partition_log(url: str) -> None:
    prefix = prefix_of(url)
    async with conveyor.App(url, limits=TEST_LIMITS) as app:
        await app.create_queue("clicks", partitions=3, retention_seconds=600)
        await app.queue("clicks").pause()
        await app.update_queue("clicks", retention_seconds=900)
    base = await last_meta(f"{prefix}_q_clicks", f"{prefix}.q.clicks.meta")
    for k in (1, 2):
        copy = await last_meta(f"{prefix}_p{k}_clicks", f"{prefix}.p.clicks.{k}.meta")
        assert (copy["paused"], copy["retention"], copy["parts"]) == (True, 900, 3)
        assert (copy["paused"], copy["retention"]) == (base["paused"], base["retention"])


async def test_a_partition_that_missed_a_settings_change_gets_it_from_its_next_reader(url: str) -> None:
    prefix = prefix_of(url)
    async with conveyor.App(url, limits=TEST_LIMITS) as app:
        await app.create_queue("clicks", partitions=3)
        await app.queue("clicks").send_batch([conveyor.SendRequest(n, group=f"g{n}") for n in range(9)])
    # a process paused the queue and stopped before copying the change to the partitions
    base_stream, subject = f"{prefix}_q_clicks", f"{prefix}.q.clicks.meta"
    reply = await jetstream_request(NATS_PORT, f"STREAM.MSG.GET.{base_stream}", {"last_by_subj": subject})
    header = records.decode(base64.b64decode(reply["message"]["data"])).header
    paused = records.encode(dict(header, paused=True))
    nc = await nats.connect(f"nats://127.0.0.1:{NATS_PORT}")
    try:
        await nc.jetstream().publish(subject, paused)
    finally:
        await nc.close()
    async with conveyor.App(url, limits=TEST_LIMITS) as app:
        assert await app.backend.lease_many("clicks", 100, 30) == []  # no partition leases
        await app.queue("clicks").resume()
        assert len(await app.queue("clicks").pull(batch_size=100)) == 9


async def test_a_missing_partition_stream_is_made_again_and_one_left_behind_is_not_reused(url: str) -> None:
    prefix = prefix_of(url)
    async with conveyor.App(url, limits=TEST_LIMITS) as app:
        await app.create_queue("clicks", partitions=3)
        await jetstream_request(NATS_PORT, f"STREAM.DELETE.{prefix}_p2_clicks")
        await app.queue("clicks").send_batch(list(range(60)))  # partition 2's share makes it again
        assert f"{prefix}_p2_clicks" in await streams(prefix)
        assert (await app.queue("clicks").stats()).backlog == 60
    # the queue's own stream deleted under partitions that still hold messages (a delete that
    # stopped half way): a queue made again under the name starts empty
    await jetstream_request(NATS_PORT, f"STREAM.DELETE.{prefix}_q_clicks")
    async with conveyor.App(url, limits=TEST_LIMITS) as app:
        await app.create_queue("clicks", partitions=3)
        assert (await app.queue("clicks").stats()).total == 0
        await app.queue("clicks").send("new")
        assert [m.body for m in await app.queue("clicks").pull(batch_size=10)] == ["new"]


async def test_a_producer_and_a_consumer_in_two_apps_share_a_partitioned_queue(url: str) -> None:
    async with (
        conveyor.App(url, limits=TEST_LIMITS) as producer,
        conveyor.App(url, limits=TEST_LIMITS) as consumer,
    ):
        await producer.create_queue("clicks", partitions=4)
        ids = await producer.queue("clicks").send_batch(
            [conveyor.SendRequest(n, dedup_id=f"d{n % 10}") for n in range(20)]
        )
        assert ids[10:] == ids[:10]  # the second ten named the first ten's dedup ids
        taken: list[int] = []
        while batch := await consumer.queue("clicks").pull(batch_size=3):
            taken += [m.body for m in batch]
            await consumer.queue("clicks").ack([m.lease_id for m in batch])
        assert sorted(taken) == list(range(10))
        assert (await producer.queue("clicks").stats()).total == 0


async def test_the_shared_cluster_places_partitions_on_several_servers(tmp_path: Path) -> None:
    from tests.support.engines import check_nats_cluster, nats_cluster_storage
    from tests.support.nats_cluster import shared_nats_cluster

    check_nats_cluster()
    async with nats_cluster_storage(tmp_path) as cluster_url:
        cluster = await shared_nats_cluster()
        prefix = prefix_of(cluster_url)
        async with conveyor.App(cluster_url, limits=TEST_LIMITS) as app:
            await app.create_queue("clicks", partitions=8)
            await app.queue("clicks").send_batch(list(range(80)))
            names = [f"{prefix}_q_clicks", *(f"{prefix}_p{k}_clicks" for k in range(1, 8))]
            leaders = {str((await cluster.stream_cluster(name))["leader"]) for name in names}
            assert len(leaders) >= 2, leaders
            info = await jetstream_request(cluster.nodes[0].port, f"STREAM.INFO.{names[3]}")
            assert info["config"]["num_replicas"] == 3
            assert info["state"]["messages"] >= 1
            assert (await app.queue("clicks").stats()).backlog == 80
