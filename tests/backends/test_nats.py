"""What only the NATS engine has to show: URL options, the stream layout, the log applied the same
way everywhere (at any time, up to a day's delay), a send retried after a lost reply stored once,
compaction, moves finished after a crash, a queue made again, and worker processes sharing a
queue. The shared semantics are in the conformance suites (run with `-k nats`); failures of
servers are in test_nats_faults.py."""

from __future__ import annotations

import asyncio
import json
import signal
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import conveyor
from conveyor.backends.base import handed_token, is_ahead
from conveyor.bench.nats_servers import free_ports
from conveyor.core.ids import new_message_id
from conveyor.errors import BackendUnavailable, InvalidURL
from conveyor.types import DeadLetter, DeadLetterInfo, OutgoingMessage, QueueSettings, Settlement
from tests.consumer.test_worker_process import PROCESS_TIMEOUT_SECONDS, WorkerProcess, read_log
from tests.support.apps import TEST_LIMITS
from tests.support.engines import check_nats, nats_storage
from tests.support.polling import eventually

pytest.importorskip("nats", reason="the NATS engine needs: pip install 'conveyor[nats]'")

from conveyor.backends.nats import backend as nats_backend
from conveyor.backends.nats import records, snapshots, view
from conveyor.backends.nats.backend import NatsBackend
from conveyor.backends.nats.jetstream import parse_nats_url
from conveyor.backends.nats.records import Outgoing
from conveyor.backends.nats.state import Arrival, QueueState

DAY = 86_400.0

# -- URL ----------------------------------------------------------------------------------------


def test_the_url_lists_servers_and_carries_conveyor_options() -> None:
    parsed = parse_nats_url("nats://u:p%40ss@h1:4333,h2?prefix=app-one&replicas=3&duplicate_window=30")
    assert parsed.servers == ["nats://h1:4333", "nats://h2:4222"]
    assert (parsed.user, parsed.password, parsed.token) == ("u", "p@ss", None)
    assert (parsed.prefix, parsed.replicas, parsed.duplicate_window) == ("app-one", 3, 30.0)
    assert parsed.where == "h1:4333,h2:4222"
    defaults = parse_nats_url("nats://localhost")
    assert (defaults.prefix, defaults.replicas, defaults.duplicate_window) == ("conveyor", 1, 120.0)
    assert parse_nats_url("nats://s3cret@localhost").token == "s3cret"


@pytest.mark.parametrize(
    "query",
    ["prefix=has_underscore", "prefix=", "replicas=7", "replicas=1.5", "duplicate_window=0", "colour=blue"],
)
def test_a_bad_option_is_an_invalid_url_that_hides_the_password(query: str) -> None:
    with pytest.raises(InvalidURL) as raised:
        parse_nats_url(f"nats://user:hunter2@localhost:4222?{query}")
    assert "hunter2" not in str(raised.value)
    assert query.split("=")[0] in str(raised.value)


def test_a_bad_server_is_an_invalid_url() -> None:
    with pytest.raises(InvalidURL, match="host:port"):
        parse_nats_url("nats://localhost:port")


async def test_an_unreachable_server_is_backend_unavailable_without_the_password() -> None:
    [closed_port] = free_ports(1)  # free: nothing listens
    backend = NatsBackend(f"nats://user:hunter2@127.0.0.1:{closed_port}")
    with pytest.raises(BackendUnavailable) as raised:
        await backend.connect()
    assert "hunter2" not in str(raised.value)
    assert str(closed_port) in str(raised.value)


# -- the state machine, at any time -----------------------------------------------------------------


def _arrival(n: int, delay: float | None = None) -> Arrival:
    """Message `n` as a send record at stream sequence 7 names it (its body 20 bytes in)."""
    return Arrival(f"id{n}", "json", (7, 20 * n, 20), delay)


def _outgoing(n: int) -> Outgoing:
    return Outgoing(f"id{n}", json.dumps({"n": n}).encode(), "json")


def test_a_message_delayed_a_full_day_becomes_visible_after_86400_seconds_and_not_before() -> None:
    state = QueueState("later")
    sent_at = 1_000_000.0
    state.send([_arrival(1, DAY)], sent_at, 1 << 20)
    assert state.lease(10, 30, "early", sent_at + DAY - 0.001) == []
    stats = state.stats(sent_at + DAY - 0.001)
    assert (stats.backlog, stats.delayed) == (0, 1)
    assert state.next_due() == sent_at + DAY
    [leased] = state.lease(10, 30, "on-time", sent_at + DAY)
    assert (leased.id, leased.attempts) == ("id1", 1)


def test_a_snapshot_holds_the_whole_state() -> None:
    state = QueueState("q")
    state.set_meta(QueueSettings(2, 600), True, 5.0)
    state.send([_arrival(n) for n in range(5)], 100.0, 1 << 20)
    state.paused = False
    leased = state.lease(2, 30, "tok", 103.0)  # visible from 102 (the queue's delivery delay)
    record = DeadLetterInfo(leased[1].id, "q", 1, "boom", 104.0)
    state.settle(
        [], [(leased[0].id, "tok", 7.0)], [(leased[1].id, "tok", "dead1", "q-dlq", record)], "m", 104.0
    )
    copy = snapshots.decode_state("q", snapshots.encode_state(state))
    assert copy.stats(105.0) == state.stats(105.0)
    assert [m.stored("q", 105.0, b"") for m in copy.peek(10)] == [
        m.stored("q", 105.0, b"") for m in state.peek(10)
    ]
    assert [m.location for m in copy.peek(10)] == [(7, 20 * n, 20) for n in (2, 3, 4, 0)]
    assert (copy.settings, copy.created_at, copy.now) == (state.settings, state.created_at, state.now)
    [move] = copy.outbox.values()
    assert [(a.id, a.dead_letter.original_id if a.dead_letter else None) for a in move.copies] == [
        ("dead1", leased[1].id)
    ]
    assert copy.lease(10, 30, "next", 200.0)[-1].attempts == 2  # the retried one kept its attempt


def test_a_snapshot_keeps_groups_in_order_and_their_head_out() -> None:
    state = QueueState("q")
    grouped = [Arrival(f"g{n}", "json", (7, 20 * n, 20), group="g") for n in range(3)]
    state.send([*grouped, _arrival(9)], 100.0, 1 << 20)
    [head, free] = state.lease(10, 30, "tok", 100.0)
    assert (head.id, head.group, free.id) == ("g0", "g", "id9")
    copy = snapshots.decode_state("q", snapshots.encode_state(state))
    assert copy.lease(10, 30, "more", 101.0) == []  # g1 still waits for the head
    copy.settle([("g0", "tok")], [], [], "m", 102.0)
    [second] = copy.lease(10, 30, "next", 102.0)
    assert (second.id, second.group) == ("g1", "g")


def test_a_lease_record_hands_its_first_non_suspects_when_it_takes_that_many() -> None:
    # Backend.lease_ahead on NATS: the rule every reader applies to a lease record with "h"
    state = QueueState("q")
    state.send([_arrival(n) for n in range(4)], 100.0, 1 << 20)
    state.lease(1, 1, handed_token("r-gone"), 100.0)  # id0: handed, then expired: a suspect
    leased = state.lease(10, 30, "r-tok", 102.0, hand=2)
    assert [(m.id, m.lost) for m in leased] == [("id1", 0), ("id2", 0), ("id3", 0), ("id0", 1)]
    assert [m.lease_token for m in leased] == ["h-tok", "h-tok", "r-tok", "r-tok"]
    copy = snapshots.decode_state("q", snapshots.encode_state(state))  # a snapshot keeps the kinds
    assert copy.begin([("id1", "h-tok"), ("id3", "r-tok")], 103.0) == [True, True]
    state.send([_arrival(n) for n in range(4, 7)], 110.0, 2 << 20)
    short = state.lease(10, 30, "r-few", 110.0, hand=4)  # takes 3: fewer than it would hand
    assert [m.lease_token for m in short] == ["r-few"] * 3


def test_records_and_snapshots_of_before_groups_read_as_ungrouped() -> None:
    state = QueueState("q")
    state.send([_arrival(n) for n in range(2)], 100.0, 1 << 20)
    snapshot = json.loads(snapshots.encode_state(state))
    snapshot["v"] = 3
    snapshot["messages"] = [entry[:12] for entry in snapshot["messages"]]  # as v3 wrote them
    old = snapshots.decode_state("q", json.dumps(snapshot).encode())
    assert [m.id for m in old.lease(10, 30, "tok", 101.0)] == ["id0", "id1"]
    # a send record of before groups: six items, or seven with a dedup id
    record = records.decode(
        b'{"op":"send","m":[["a","json",null,2,null,null],["b","json",null,2,null,null,"d"]]}\n{}{}'
    )
    arrivals = records.decode_arrivals(record, 7)
    assert [(a.id, a.dedup_id, a.group) for a in arrivals] == [("a", None, None), ("b", "d", None)]
    grouped = records.decode(records.encode_send([Outgoing("c", b"{}", "json", group="g")]))
    assert [(a.id, a.dedup_id, a.group) for a in records.decode_arrivals(grouped, 8)] == [("c", None, "g")]


def test_send_entries_keep_headers_eighth_and_the_group_ninth() -> None:
    grouped = Outgoing("a", b"x", "json", group="g")  # no headers: null holds the eighth place
    both = Outgoing("b", b"x", "json", dedup_id="d", headers={"k": "v"}, group="g")
    assert records.send_entries([grouped, both]) == [
        ["a", "json", None, 1, None, None, None, None, "g"],
        ["b", "json", None, 1, None, None, "d", {"k": "v"}, "g"],
    ]
    arrivals = records.decode_arrivals(records.decode(records.encode_send([grouped, both])), 1)
    assert [(a.dedup_id, a.headers, a.group) for a in arrivals] == [(None, None, "g"), ("d", {"k": "v"}, "g")]


def test_a_snapshot_keeps_headers_and_groups_of_messages_and_of_dead_letters_on_their_way() -> None:
    state = QueueState("q")
    consumer = conveyor.PullConsumer(batch_size=3)
    state.set_meta(QueueSettings(pull_consumer=consumer, partitions=4), False, 5.0)
    grouped = [Arrival(f"g{n}", "json", (7, 20 * n, 20), headers={"n": str(n)}, group="g") for n in range(2)]
    state.send(grouped, 100.0, 1 << 20)
    [head] = state.lease(10, 30, "tok", 101.0)
    record = DeadLetterInfo(head.id, "q", 1, "boom", 102.0)
    state.settle([], [], [(head.id, "tok", "dead1", "q-dlq", record)], "m", 102.0)
    copy = snapshots.decode_state("q", snapshots.encode_state(state))
    assert (copy.settings.pull_consumer, copy.settings.partitions) == (consumer, 4)
    [move] = copy.outbox.values()
    [dead] = move.copies
    assert dead.headers is not None
    assert (dead.group, dead.headers["n"], dead.headers["conveyor-dead-letter-error"]) == ("g", "0", "boom")
    [second] = copy.lease(10, 30, "next", 103.0)
    assert (second.id, second.group, second.headers) == ("g1", "g", {"n": "1"})


def test_snapshots_of_every_older_version_are_read() -> None:
    state = QueueState("q")
    state.set_meta(QueueSettings(), False, 5.0)
    state.send([_arrival(0), Arrival("g0", "json", (7, 20, 20), group="g")], 100.0, 1 << 20)
    state.settle([], [], [], "m", 100.0)
    current = json.loads(snapshots.encode_state(state))
    pull = conveyor.PullConsumer(batch_size=3).to_dict()

    def older(version: int, extra: list[list[object]], settings_extra: list[object]) -> QueueState:
        snapshot = dict(current, v=version)
        snapshot["settings"] = current["settings"][:5] + settings_extra
        snapshot["messages"] = [
            entry[:12] + more for entry, more in zip(current["messages"], extra, strict=True)
        ]
        return snapshots.decode_state("q", json.dumps(snapshot).encode())

    # v3 as meta wrote it: headers an optional 13th item, the pull consumer the 6th setting
    meta = older(3, [[{"k": "v"}], []], [pull])
    assert meta.settings.pull_consumer == conveyor.PullConsumer(batch_size=3)
    assert sorted((m.id, m.headers, m.group) for m in meta.lease(10, 30, "t", 101.0)) == [
        ("g0", None, None),
        ("id0", {"k": "v"}, None),
    ]
    # v4 as groups wrote it before headers: the group 13th, the partition count 6th
    groups = older(4, [[None], ["g"]], [4])
    assert (groups.settings.pull_consumer, groups.settings.partitions) == (None, 4)
    assert sorted((m.id, m.headers, m.group) for m in groups.lease(10, 30, "t", 101.0)) == [
        ("g0", None, "g"),
        ("id0", None, None),
    ]
    # v2: no `lost`, nothing after it
    plain = dict(current, v=2, settings=current["settings"][:2])
    plain["messages"] = [entry[:11] for entry in current["messages"]]
    old = snapshots.decode_state("q", json.dumps(plain).encode())
    assert sorted(m.id for m in old.lease(10, 30, "t", 101.0)) == ["g0", "id0"]


def test_a_snapshot_keeps_headers_of_messages_and_of_dead_letters_on_their_way() -> None:
    state = QueueState("q")
    state.set_meta(QueueSettings(), False, 5.0)
    arrivals = [_arrival(0), _arrival(1)]
    for arrival in arrivals:
        arrival.headers = {"k": arrival.id}
    state.send(arrivals, 100.0, 1 << 20)
    [leased] = state.lease(1, 30, "tok", 101.0)
    record = DeadLetterInfo(leased.id, "q", 1, "boom", 102.0)
    state.settle([], [], [(leased.id, "tok", "dead1", "q-dlq", record)], "m", 102.0)
    copy = snapshots.decode_state("q", snapshots.encode_state(state))
    assert [m.headers for m in copy.peek(10)] == [{"k": "id1"}]
    [move] = copy.outbox.values()
    [dead] = move.copies
    assert dead.headers is not None
    assert (dead.headers["k"], dead.headers["conveyor-dead-letter-error"]) == ("id0", "boom")


def test_send_records_without_headers_keep_their_old_layout() -> None:
    plain = records.Outgoing("a", b"x", "json")
    deduplicated = records.Outgoing("b", b"x", "json", dedup_id="d")
    with_headers = records.Outgoing("c", b"x", "json", headers={"k": "v"})
    entries = records.send_entries([plain, deduplicated, with_headers])
    assert [len(entry) for entry in entries] == [6, 7, 8]
    arrivals = records.decode_arrivals(
        records.decode(records.encode_send([plain, deduplicated, with_headers])), 1
    )
    assert [(a.dedup_id, a.headers) for a in arrivals] == [(None, None), ("d", None), (None, {"k": "v"})]


# -- on the machine's server ---------------------------------------------------------------------


@pytest.fixture
async def url(tmp_path: Path) -> AsyncIterator[str]:
    check_nats()
    async with nats_storage(tmp_path) as storage_url:
        yield storage_url


async def _stream_names(url: str) -> list[str]:
    import nats

    nc = await nats.connect(url.split("?")[0])
    try:
        prefix = parse_nats_url(url).prefix
        reply = await nc.request("$JS.API.STREAM.NAMES", json.dumps({"subject": f"{prefix}.>"}).encode())
        return sorted(json.loads(reply.data).get("streams") or [])
    finally:
        await nc.close()


async def test_each_queue_is_one_stream_and_subscriptions_one_more(url: str) -> None:
    prefix = parse_nats_url(url).prefix
    async with conveyor.App(url) as app:
        await app.queue("orders").send({"n": 1})
        await app.queue("orders-dlq").send({"n": 1})
        await app.subscribe("events", queue="orders")
        assert await _stream_names(url) == [
            f"{prefix}_q_orders",
            f"{prefix}_q_orders-dlq",
            f"{prefix}_topics",
        ]
        assert await app.delete_queue("orders")
        assert await _stream_names(url) == [f"{prefix}_q_orders-dlq", f"{prefix}_topics"]
        assert await app.list_subscriptions() == []


async def test_a_send_retried_after_a_lost_reply_is_stored_once(url: str) -> None:
    async with conveyor.App(url) as app:
        await app.create_queue("orders")
        backend = app.backend
        assert isinstance(backend, NatsBackend)
        messages = [_outgoing(n) for n in range(3)]
        await backend._append("orders", messages, "send")
        await backend._append("orders", messages, "send")  # the same record: its Nats-Msg-Id repeats
        assert (await app.queue("orders").stats()).backlog == 3
        await backend._append("orders", messages, "late")  # past the duplicate window: ids still live
        assert (await app.queue("orders").stats()).backlog == 3
        # a lone send (its own path), acked, then retried: the Nats-Msg-Id keeps it from coming back
        await backend._append("orders", [_outgoing(9)], "send")
        [leased] = [m for m in await backend.lease_many("orders", 10, 30) if m.id == "id9"]
        assert (await app.queue("orders").ack([leased.lease_id])).ack_count == 1
        await backend._append("orders", [_outgoing(9)], "send")
        assert (await app.queue("orders").stats()).total == 3


async def test_another_process_wakes_at_once_on_a_send(url: str) -> None:
    async with conveyor.App(url) as producer, conveyor.App(url) as consumer:
        await producer.create_queue("wake")
        waiter = asyncio.create_task(consumer.backend.wait_for_messages("wake", 60))
        await asyncio.sleep(0.2)
        assert not waiter.done()
        await producer.queue("wake").send({"n": 1})
        async with asyncio.timeout(10):
            await waiter


async def test_a_lease_ahead_hands_the_first_it_asks_and_every_reader_agrees(url: str) -> None:
    async with conveyor.App(url) as leaser, conveyor.App(url) as other:
        await leaser.queue("orders").send_batch([{"n": n} for n in range(6)])
        leased = await leaser.backend.lease_ahead("orders", 10, 30, hand_first=4)
        assert [is_ahead(m.lease_id) for m in leased] == [False] * 4 + [True] * 2
        # another process's view of the log handed the same four: their handed ids settle there
        result = await other.queue("orders").ack([m.lease_id for m in leased[:4]])
        assert (result.ack_count, result.stale) == (4, [])
        assert await other.core.begin("orders", [m.lease_id for m in leased[4:]]) == [True, True]


async def test_a_message_delayed_a_full_day_is_held_for_that_long(url: str) -> None:
    async with conveyor.App(url) as app:
        await app.queue("later").send({"n": 1}, delay_seconds=DAY)
        stats = await app.queue("later").stats()
        assert (stats.backlog, stats.delayed) == (0, 1)
        [stored] = await app.backend.peek("later", 10)
        assert stored.visible_at - stored.timestamp == pytest.approx(DAY)
        assert await app.queue("later").pull() == []


@pytest.mark.parametrize(
    ("rehome_max_bytes", "first_kept"),
    [(1 << 20, 6), (0, 2)],  # records: 1 the settings, 2-5 the sends, then leases and renewals
    ids=["bodies-written-again", "bodies-left-in-place"],
)
async def test_compaction_snapshots_the_log_and_a_new_reader_starts_from_the_snapshot(
    url: str, monkeypatch: pytest.MonkeyPatch, rehome_max_bytes: int, first_kept: int
) -> None:
    monkeypatch.setattr(view, "COMPACT_MIN_BYTES", 20_000)
    monkeypatch.setattr(view, "SNAPSHOT_PART_BYTES", 4_000)  # several parts
    monkeypatch.setattr(view, "REHOME_MAX_BYTES", rehome_max_bytes)
    prefix = parse_nats_url(url).prefix
    async with conveyor.App(url) as app:
        backend = app.backend
        assert isinstance(backend, NatsBackend)
        await app.create_queue("busy", delivery_delay=0, retention_seconds=3600)
        queue = app.queue("busy")
        for start in range(0, 400, 100):
            await queue.send_batch([{"n": n, "pad": "x" * 100} for n in range(start, start + 100)])
        leased = await queue.pull(batch_size=50)
        await queue.ack(acks=[m.lease_id for m in leased[:40]], retries=[(leased[40].lease_id, 600)])
        held = leased[41:]
        await queue.pause()

        async def compacted() -> bool:
            reply = await backend.js.api(f"STREAM.INFO.{prefix}_q_busy")
            return int(reply["state"]["first_seq"]) > 1

        for _ in range(200):  # more records until the log is compacted
            await app.core.extend_leases("busy", [m.lease_id for m in held], 60)
            if await compacted():
                break
        await eventually(compacted, "the log was compacted", 20)
        reply = await backend.js.api(f"STREAM.INFO.{prefix}_q_busy")
        if rehome_max_bytes:  # every send record purged: the live bodies were written again
            assert int(reply["state"]["first_seq"]) >= first_kept
        else:  # the purge stopped at the oldest record holding a live body
            assert int(reply["state"]["first_seq"]) == first_kept
        before = await queue.stats()
        peeked = [(m.id, m.attempts, m.leased, m.body) for m in await queue.peek(400)]
        assert sorted(body["n"] for *_, body in peeked) == list(range(40, 400))  # 40 acked
        assert all(body["pad"] == "x" * 100 for *_, body in peeked)

        async with conveyor.App(url) as fresh:  # its reader starts from the snapshot
            again = fresh.queue("busy")
            stats = await again.stats()
            assert (stats.backlog, stats.delayed, stats.in_flight, stats.bytes, stats.paused) == (
                before.backlog,
                before.delayed,
                before.in_flight,
                before.bytes,
                True,
            )
            assert [(m.id, m.attempts, m.leased, m.body) for m in await again.peek(400)] == peeked
            assert (await fresh.get_queue("busy")).settings == QueueSettings(0, 3600)
            await again.resume()
            result = await again.ack(acks=[m.lease_id for m in held])  # leases made before the snapshot
            assert (result.ack_count, result.warnings) == (len(held), [])
        assert (await queue.stats()).total == 400 - 50 + 1


# -- retention sweeps: each queue by its readers, a queue nobody reads by a sweep that lets it go --


async def _readers(app: conveyor.App, queue: str) -> int:
    backend = app.backend
    assert isinstance(backend, NatsBackend)
    return (await backend.js.require_stream(queue)).readers


async def test_a_sweep_reads_a_queue_nobody_reads_and_lets_it_go(url: str) -> None:
    async with conveyor.App(url, limits=TEST_LIMITS) as producer, conveyor.App(url) as worker:
        for name in ("idle-a", "idle-b"):
            await producer.create_queue(name, retention_seconds=1)
            await producer.queue(name).send({"n": "old"})
        await asyncio.sleep(1.5)
        await producer.queue("idle-b").send({"n": "young"})
        assert await worker.sweep() == 2
        assert [await _readers(worker, name) for name in ("idle-a", "idle-b")] == [0, 0]
        assert await worker.sweep() == 0  # unchanged since it looked: not read again
        assert [await _readers(worker, name) for name in ("idle-a", "idle-b")] == [0, 0]
        assert [m.body for m in await producer.queue("idle-b").peek()] == [{"n": "young"}]


async def test_a_queue_another_process_reads_is_left_to_that_reader_which_sweeps_it(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(nats_backend, "SWEEP_INTERVAL_SECONDS", 0.2)  # a reader's own sweeps
    async with conveyor.App(url, limits=TEST_LIMITS) as reader, conveyor.App(url) as worker:
        await reader.create_queue("read", retention_seconds=1)
        await reader.queue("read").send({"n": "old"})
        assert (await reader.queue("read").stats()).total == 1  # the reader holds the queue now
        assert await _readers(worker, "read") == 1
        await asyncio.sleep(1.5)
        assert await worker.sweep() == 0  # the reader's to sweep, not the worker's

        async def swept() -> bool:
            return (await reader.queue("read").stats()).total == 0

        await eventually(swept, "the reader swept the queue it reads", 10)


async def test_a_reader_whose_queue_was_deleted_stops_sweeping_it(
    url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(nats_backend, "SWEEP_INTERVAL_SECONDS", 0.2)
    async with conveyor.App(url, limits=TEST_LIMITS) as reader, conveyor.App(url) as other:
        await reader.create_queue("gone", retention_seconds=1)
        await reader.queue("gone").send({"n": "old"})
        assert (await reader.queue("gone").stats()).total == 1  # the reader holds it
        assert await other.delete_queue("gone")
        await asyncio.sleep(2.5)  # its message passed retention: the reader's sweeps came due
    assert not [r for r in caplog.records if "sweeping failed" in r.getMessage()]


async def test_dead_letters_left_in_the_outbox_by_a_crash_are_moved_by_the_next_sweep(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with conveyor.App(url) as app:
        backend = app.backend
        assert isinstance(backend, NatsBackend)
        await app.create_queue("work-dlq")
        await app.queue("work").send_batch([{"n": 1}, {"n": 2}])
        pulled = await app.queue("work").pull(batch_size=2)

        async def crash_after_settle(source: str, moves: object) -> None:
            """The settling process dies before the copy is stored."""

        monkeypatch.setattr(backend, "_finish_moves", crash_after_settle)
        dead = [DeadLetter(m.lease_id, new_message_id(), "boom", "work-dlq", m.attempts) for m in pulled]
        result = await app.core.settle("work", Settlement(dead_letters=dead))
        assert result.dead_lettered == 2
        assert (await app.queue("work").stats()).total == 0  # out of the queue, in its outbox
        assert (await app.queue("work-dlq").stats()).total == 0
        monkeypatch.undo()

        monkeypatch.setattr(nats_backend, "MOVE_GRACE_SECONDS", 0.0)
        await app.sweep()
        await app.sweep()  # a second recovery stores nothing twice
        copies = await app.queue("work-dlq").peek(10)
        assert sorted(m.id for m in copies) == sorted(d.new_id for d in dead)
        assert {m.dead_letter.source_queue for m in copies if m.dead_letter} == {"work"}


async def test_a_write_to_several_queues_commits_at_once_and_a_crash_after_it_is_finished_by_a_sweep(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with conveyor.App(url) as app:
        backend = app.backend
        assert isinstance(backend, NatsBackend)
        for name in ("kitchen", "bar", "till"):
            await app.create_queue(name)
        messages = [
            OutgoingMessage(name, new_message_id(), b'{"order":7}', "json")
            for name in ("kitchen", "bar", "till")
        ]

        async def crash_after_commit(source: str, moves: object) -> None:
            """The sending process dies once the first queue's record is stored."""

        monkeypatch.setattr(backend, "_finish_moves", crash_after_commit)
        await backend.send_many(messages)
        monkeypatch.undo()
        assert [(await app.queue(name).stats()).total for name in ("kitchen", "bar", "till")] == [1, 0, 0]

        monkeypatch.setattr(nats_backend, "MOVE_GRACE_SECONDS", 0.0)
        await app.sweep()
        await app.sweep()
        for message in messages:
            [stored] = await app.backend.peek(message.queue, 10)
            assert (stored.id, stored.body) == (message.id, message.body)


async def test_a_queue_deleted_and_made_again_is_read_afresh_by_another_app(url: str) -> None:
    async with conveyor.App(url) as reader, conveyor.App(url) as other:
        await reader.queue("q").send_batch([{"n": n} for n in range(5)])
        assert (await reader.queue("q").stats()).backlog == 5  # the reader now follows the log
        assert await other.delete_queue("q")
        await other.queue("q").send({"n": "new"})
        assert (await reader.queue("q").stats()).backlog == 1
        [pulled] = await reader.queue("q").pull(batch_size=10)
        assert pulled.body == {"n": "new"}


async def test_a_reader_that_only_leases_notices_its_queue_was_made_again(url: str) -> None:
    async with conveyor.App(url) as reader, conveyor.App(url) as other:
        await reader.queue("q").send_batch([{"n": n} for n in range(5)])
        assert (await reader.queue("q").stats()).backlog == 5
        assert await other.delete_queue("q")
        new_ids = [await other.queue("q").send({"n": f"new{n}"}) for n in range(10)]  # past the old log's end
        pulled = await reader.queue("q").pull(batch_size=100)  # no read first: the lease itself must notice
        assert sorted(m.id for m in pulled) == sorted(new_ids)


@pytest.mark.slow
async def test_worker_processes_share_a_queue_and_a_sigkill_loses_nothing(url: str, tmp_path: Path) -> None:
    log = tmp_path / "handled.log"
    workers: list[WorkerProcess] = []
    try:
        async with conveyor.App(url) as app:
            queue = app.queue("jobs")
            sent: set[str] = set()
            for start in range(0, 3000, 100):
                sent.update(await queue.send_batch([{"n": n} for n in range(start, start + 100)]))
            workers += [WorkerProcess(url, log, handler_seconds=0.05) for _ in range(2)]

            async def busy() -> bool:
                return len([e for e in read_log(log) if e[0] == "done"]) >= 500

            await eventually(busy, "the workers handled 500 messages", PROCESS_TIMEOUT_SECONDS)
            assert workers[0].stop(signal.SIGKILL) == -signal.SIGKILL

            async def drained() -> bool:
                return (await queue.stats()).total == 0

            await eventually(drained, "the surviving worker drained the queue", PROCESS_TIMEOUT_SECONDS)
            assert workers[1].stop(signal.SIGTERM) == 0, workers[1].stderr()
    finally:
        for worker in workers:
            worker.cleanup()

    done = [(message_id, attempts) for kind, message_id, attempts in read_log(log) if kind == "done"]
    assert {message_id for message_id, _ in done} == sent  # every message was handled
    assert len(set(done)) == len(done), "one delivery was handled twice"
    handled_twice = [message_id for message_id, count in Counter(m for m, _ in done).items() if count > 1]
    assert set(handled_twice) <= {message_id for message_id, attempts in done if attempts > 1}


def test_a_log_is_snapshotted_again_only_after_twice_the_last_snapshot_in_new_records() -> None:
    # every reader receives each snapshot: on a large backlog (100 MB snapshots) compacting at
    # each doubling of the live bodies alone sent snapshots every few seconds while a worker drained
    mb = 1024 * 1024
    live, snapshot = 100 * mb, 110 * mb
    assert not view.worth_compacting(live + 200 * mb, live, snapshot, 1.0)  # < 2 x 110 MB since
    assert view.worth_compacting(live + 230 * mb, live, snapshot, 1.0)
    # the readers' spread applies to it too
    assert not view.worth_compacting(live + 230 * mb, live, snapshot, 1.5)
    # without a snapshot seen, the size of the log and of its live bodies decide, as before
    assert view.worth_compacting(3 * mb + view.COMPACT_MIN_BYTES, mb, 0, 1.0)
    assert not view.worth_compacting(view.COMPACT_MIN_BYTES, mb, 0, 1.0)
    assert not view.worth_compacting(50 * mb, 30 * mb, 0, 1.0)  # under twice the live bodies
