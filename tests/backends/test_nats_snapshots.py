"""A NATS queue's snapshot of a large state is written and read a slice at a time: it is the
state at its base however many records are applied while it is written, and the event loop runs
other tasks while a snapshot is encoded (a compaction) and decoded (a reader starting)."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

import conveyor
from conveyor.core.ids import new_message_id
from conveyor.errors import StorageUnusable
from conveyor.types import DeadLetterInfo, OutgoingMessage, QueueSettings
from tests.support.engines import check_nats, nats_storage

pytest.importorskip("nats", reason="the NATS engine needs: pip install 'conveyor[nats]'")

from conveyor.backends.nats import records, snapshots, view
from conveyor.backends.nats.backend import NatsBackend
from conveyor.backends.nats.state import ORDER_SHIFT, Arrival, FrozenState, QueueState


@pytest.fixture
async def url(tmp_path: Path) -> AsyncIterator[str]:
    check_nats()
    async with nats_storage(tmp_path) as storage_url:
        yield storage_url


def _sends(state: QueueState, first_seq: int, records: int, per_record: int, now: float) -> None:
    for seq in range(first_seq, first_seq + records):
        arrivals = [
            Arrival(
                f"m{seq}-{n}",
                "json",
                (seq, 30 * n, 30),
                dedup_id=f"d{seq}-{n}" if n % 3 == 0 else None,
                headers={"n": str(n)} if n % 4 == 0 else None,
                group=f"g{n % 5}" if n % 7 == 0 else None,
            )
            for n in range(per_record)
        ]
        state.send(arrivals, now, seq << ORDER_SHIFT)


def test_a_snapshot_written_while_records_are_applied_is_the_state_at_its_base(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(snapshots, "SLICE", 7)  # many slices, a change between each two
    state = QueueState("q")
    state.set_meta(QueueSettings(0, 3600), False, 1.0)
    _sends(state, 2, 20, 10, 100.0)  # records 2-21
    leased = state.lease(60, 30, "t1", 101.0)
    dead = DeadLetterInfo(leased[2].id, "q", 1, "boom", 102.0)
    state.settle([], [], [(leased[2].id, "t1", "copy", "q-dlq", dead)], "mv1", 102.0)
    base = 30
    expected = snapshots.encode_state(state)

    # every kind of change a record makes, one between each two slices of the snapshot
    now = itertools.count(103)
    held = iter(leased[3:])
    changes: list[Callable[[], Any]] = [
        lambda: state.lease(5, 30, "t2", next(now)),
        lambda: state.extend([(m.id, m.lease_token or "") for m in leased[:10]], 90, next(now)),
        lambda: state.release([(m.id, "t1") for m in itertools.islice(held, 3)], next(now)),
        lambda: state.begin([(m.id, "t1") for m in itertools.islice(held, 3)], next(now)),
        lambda: state.settle(
            [(m.id, "t1") for m in itertools.islice(held, 2)],
            [(m.id, "t1", 5.0) for m in itertools.islice(held, 2)],
            [],
            f"mv{next(now)}",
            next(now),
        ),
        lambda: state.rehome([(m.id, (40, 0, 30)) for m in list(state.messages.values())[:20]]),
        lambda: _sends(state, 31 + next(now), 1, 10, next(now)),
        lambda: state.delete(next(iter(state.messages)), next(now)),
        lambda: state.move_out("elsewhere", 5, f"mv{next(now)}", next(now)),
        lambda: state.moved(["mv1"]),
        lambda: state.sweep(next(now) + 1_000_000),
        lambda: state.purge(),
    ]
    frozen = state.freeze((base + 1) << ORDER_SHIFT)
    steps = snapshots.encode_steps(frozen)
    applied = 0
    try:
        while True:
            next(steps)
            changes[applied % len(changes)]()
            applied += 1
    except StopIteration as done:
        snapshot: snapshots.Snapshot = done.value
    finally:
        state.thaw()
    assert applied > 3 * len(changes)  # every change, several times, while it was written
    assert state.messages == {}  # purged meanwhile
    assert snapshot.data == expected
    assert snapshot.first_record == 2  # the oldest body it points at, at its base


def test_a_snapshot_decoded_a_slice_at_a_time_is_the_one_read_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(snapshots, "SLICE", 3)
    state = QueueState("q")
    _sends(state, 2, 5, 10, 100.0)
    state.move_out("elsewhere", 8, "mv", 101.0)
    data = snapshots.encode_state(state)
    steps = snapshots.decode_steps("q", data)
    slices = 0
    try:
        while True:
            next(steps)
            slices += 1
    except StopIteration as done:
        copy: QueueState = done.value
    assert slices > 20
    assert snapshots.encode_state(copy) == data
    assert [m.stored("q", 200.0, b"") for m in copy.peek(50)] == [
        m.stored("q", 200.0, b"") for m in state.peek(50)
    ]


async def _turns_during(monkeypatch: pytest.MonkeyPatch, name: str, ticks: Callable[[], int]) -> list[int]:
    """Patch snapshots.`name` to record how many turns a ticker task had while each call ran."""
    original = getattr(snapshots, name)
    turns: list[int] = []

    async def counted(*args: Any) -> Any:
        before = ticks()
        result = await original(*args)
        turns.append(ticks() - before)
        return result

    monkeypatch.setattr(snapshots, name, counted)
    return turns


async def test_compacting_a_large_queue_and_loading_its_snapshot_let_other_tasks_run(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(view, "COMPACT_MIN_BYTES", 1 << 60)  # only the compaction this test makes
    monkeypatch.setattr(snapshots, "SLICE", 100)
    count = [0]

    async def ticker() -> None:
        while True:
            count[0] += 1
            await asyncio.sleep(0)

    encoding = await _turns_during(monkeypatch, "encode", lambda: count[0])
    decoding = await _turns_during(monkeypatch, "decode", lambda: count[0])
    async with conveyor.App(url) as app:
        backend = app.backend
        assert isinstance(backend, NatsBackend)
        await app.create_queue("large", delivery_delay=0, retention_seconds=3600)
        queue = app.queue("large")
        for start in range(0, 20_000, 1000):
            await backend.send_many(
                [
                    OutgoingMessage("large", new_message_id(), b'{"n":%d}' % n, "json")
                    for n in range(start, start + 1000)
                ]
            )
        the_view = await backend._synced("large")

        async def work() -> None:  # a handler's leases and acks, applied while it compacts
            while True:
                leased = await queue.pull(batch_size=10)
                await queue.ack(acks=[m.lease_id for m in leased[:5]])

        async def running(task: Callable[[], Awaitable[object]]) -> None:
            tasks = [asyncio.create_task(ticker()), asyncio.create_task(work())]
            try:
                await task()
            finally:
                for each in tasks:
                    each.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)

        await running(the_view._compact)
        assert len(encoding) == 1 and encoding[0] >= 20_000 // 100  # a turn at least each slice
        reply = await backend.js.api(f"STREAM.INFO.{the_view.js.stream(the_view.log)}")
        assert int(reply["state"]["first_seq"]) > 1  # compacted: a new reader starts from the snapshot

        async with conveyor.App(url) as fresh:
            other = fresh.backend
            assert isinstance(other, NatsBackend)
            await running(lambda: other._synced("large"))  # records keep coming while it loads
            assert len(decoding) == 1 and decoding[0] >= 20_000 // 100
            again = fresh.queue("large")
            await the_view.sync()
            now = max(the_view.now(), (await other._synced("large")).now())
            assert (await again.stats()).total == (await queue.stats()).total
            loaded = (await other._synced("large")).state
            assert [m.stored("large", now, b"") for m in loaded.peek(20_000)] == [
                m.stored("large", now, b"") for m in the_view.state.peek(20_000)
            ]


async def test_a_reader_loading_a_snapshot_of_a_newer_version_stops_loudly(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(view, "COMPACT_MIN_BYTES", 1 << 60)
    encode = snapshots.encode

    async def newer(frozen: FrozenState) -> snapshots.Snapshot:  # as a newer conveyor writes it
        written = await encode(frozen)
        document = json.loads(written.data)
        document["v"] = records.SNAPSHOT_VERSION + 1
        return snapshots.Snapshot(json.dumps(document).encode(), written.first_record)

    async with conveyor.App(url) as app:
        backend = app.backend
        assert isinstance(backend, NatsBackend)
        await app.queue("orders").send_batch([{"n": n} for n in range(10)])
        monkeypatch.setattr(snapshots, "encode", newer)
        await (await backend._synced("orders"))._compact()
        async with conveyor.App(url) as fresh:
            with pytest.raises(StorageUnusable, match=f"snapshot in format {records.SNAPSHOT_VERSION + 1}"):
                await fresh.queue("orders").stats()
            reader = await fresh.backend._views["orders"]  # type: ignore[attr-defined]
            assert reader.state.messages == {}  # nothing of it applied
