"""NATS log formats across versions: a reader stops at a record or snapshot of a format newer than
it reads (StorageUnusable naming the queue and both formats, logged once) and applies nothing
from there on; a log of the base format (records without "v", as the previous release wrote
them) is read as ever; lease ahead's handing records declare the format that introduced them,
and `record_format=1` keeps a rolling upgrade's writers to the base format."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

import conveyor
from conveyor.backends.base import handed_token, is_ahead, new_token
from conveyor.errors import InvalidURL, StorageUnusable
from tests.support.engines import check_nats, nats_storage

pytest.importorskip("nats", reason="the NATS engine needs: pip install 'conveyor[nats]'")

from conveyor.backends.nats import records, snapshots
from conveyor.backends.nats.backend import NatsBackend
from conveyor.backends.nats.jetstream import parse_nats_url
from conveyor.backends.nats.state import QueueState
from conveyor.backends.nats.view import QueueView

NEWER = records.RECORD_FORMAT + 1

# -- without a server -----------------------------------------------------------------------------


def test_a_record_declares_a_format_only_past_the_base_and_a_newer_one_is_refused() -> None:
    records.check_format({"op": "lease", "v": 1}, 7)
    records.check_format({"op": "lease", "h": 4, "v": records.HANDING_FORMAT}, 7)
    for found in (NEWER, 0, "2", None):
        with pytest.raises(records.FormatTooNew) as raised:
            records.check_format({"op": "lease", "v": found}, 7)
        assert (raised.value.found, raised.value.known, raised.value.seq) == (found, records.RECORD_FORMAT, 7)
    assert f"format {NEWER}" in str(records.FormatTooNew("a 'lease' record", NEWER, 2))


def test_a_snapshot_of_a_newer_version_is_refused_as_too_new() -> None:
    snapshot = json.loads(snapshots.encode_state(QueueState("q")))
    snapshot["v"] = records.SNAPSHOT_VERSION + 1
    with pytest.raises(records.FormatTooNew, match=f"format {records.SNAPSHOT_VERSION + 1}"):
        snapshots.decode_state("q", json.dumps(snapshot).encode())


def test_record_format_is_a_url_option_up_to_the_newest() -> None:
    assert parse_nats_url("nats://localhost").record_format == records.RECORD_FORMAT
    assert parse_nats_url("nats://localhost?record_format=1").record_format == 1
    for bad in ("0", str(NEWER), "1.5", "x"):
        with pytest.raises(InvalidURL, match="record_format"):
            parse_nats_url(f"nats://localhost?record_format={bad}")


# -- on the machine's server ---------------------------------------------------------------------


@pytest.fixture
async def url(tmp_path: Path) -> AsyncIterator[str]:
    check_nats()
    async with nats_storage(tmp_path) as storage_url:
        yield storage_url


def _backend(app: conveyor.App) -> NatsBackend:
    backend = app.backend
    assert isinstance(backend, NatsBackend)
    return backend


async def _write(app: conveyor.App, queue: str, header: dict[str, Any]) -> int:
    """Write a record as another conveyor would; its stream sequence."""
    return await _backend(app).js.publish(queue, "log", records.encode(header), new_token())


async def _view(app: conveyor.App, queue: str) -> QueueView:
    return await _backend(app)._views[queue]


async def _last_record(app: conveyor.App, queue: str) -> dict[str, Any]:
    js = _backend(app).js
    payload = await js.record(queue, (await js.require_stream(queue)).last_seq)
    assert payload is not None
    return records.decode(payload).header


def _stopped(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.ERROR and "applies nothing" in r.getMessage()
    ]


NEWER_RECORDS = [
    # a lease from a newer conveyor: applied, it would lease the oldest message here
    pytest.param({"op": "lease", "n": 1, "vt": 30, "v": NEWER}, f"format {NEWER}", id="newer-format"),
    # a kind of record only a newer conveyor writes
    pytest.param({"op": "lease-more", "n": 1, "vt": 30}, "'lease-more'", id="unknown-kind"),
]


@pytest.mark.parametrize(("header", "named"), NEWER_RECORDS)
async def test_a_reader_stops_at_a_newer_record_and_applies_nothing_after_it(
    url: str, caplog: pytest.LogCaptureFixture, header: dict[str, Any], named: str
) -> None:
    async with conveyor.App(url) as writer, conveyor.App(url) as reader:
        await writer.queue("orders").send_batch([{"n": 1}, {"n": 2}])
        newer = await _write(writer, "orders", {**header, "tok": new_token()})
        await writer.queue("orders").send({"n": 3})  # after it: not applied either
        with pytest.raises(StorageUnusable) as raised:
            await reader.queue("orders").stats()
        message = str(raised.value)
        assert "queue orders" in message and f"record {newer}" in message and named in message
        assert f"up to {records.RECORD_FORMAT}" in message
        view = await _view(reader, "orders")
        assert view.applied == newer - 1
        assert len(view.state.messages) == 2
        assert all(m.lease_token is None for m in view.state.messages.values())
        # every later use says the same; the log said it once
        with pytest.raises(StorageUnusable, match=named):
            await reader.backend.lease_many("orders", 10, 30)
        assert await reader.sweep() == 0  # a queue it cannot read is not its to sweep
    assert len(_stopped(caplog)) == 1


async def test_a_reader_already_reading_stops_at_a_newer_record_as_does_every_process_of_this_version(
    url: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with conveyor.App(url) as writer, conveyor.App(url) as reader:
        await writer.queue("orders").send_batch([{"n": 1}, {"n": 2}])
        assert (await reader.queue("orders").stats()).backlog == 2  # it follows the log now
        await _write(writer, "orders", {"op": "lease", "tok": new_token(), "n": 2, "vt": 30, "v": NEWER})
        await writer.queue("orders").send({"n": 3})
        with pytest.raises(StorageUnusable, match=f"format {NEWER}"):
            await reader.queue("orders").stats()
        view = await _view(reader, "orders")
        assert len(view.state.messages) == 2
        assert all(m.lease_token is None for m in view.state.messages.values())
        # the writer, of this version too, stops as well once it reads the queue
        with pytest.raises(StorageUnusable):
            await writer.queue("orders").stats()
    assert len(_stopped(caplog)) == 2  # once per process


async def test_a_sweep_meets_a_newer_log_nobody_reads_once(
    url: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with conveyor.App(url) as writer:
        await writer.queue("orders").send({"n": 1})
        await _write(writer, "orders", {"op": "lease", "tok": new_token(), "n": 1, "vt": 30, "v": NEWER})
    async with conveyor.App(url) as worker:
        assert await worker.sweep() == 0
        assert await worker.sweep() == 0  # unchanged since: not read again
    assert len(_stopped(caplog)) == 1


async def test_a_log_of_the_base_format_is_read_as_the_previous_release_wrote_it(url: str) -> None:
    async with conveyor.App(url) as writer, conveyor.App(url) as reader:
        await writer.queue("orders").send_batch([{"n": n} for n in range(6)])
        # the previous release's lease ahead: "h" without any "v"
        token = new_token(False)
        await _write(writer, "orders", {"op": "lease", "tok": token, "n": 6, "vt": 30, "h": 4})
        stats = await reader.queue("orders").stats()
        assert (stats.backlog, stats.in_flight) == (0, 6)
        view = await _view(reader, "orders")
        assert view.failed is None
        tokens = sorted(m.lease_token or "" for m in view.state.messages.values())
        assert tokens == sorted([handed_token(token)] * 4 + [token] * 2)


async def test_a_handing_lease_declares_its_format_and_a_plain_one_none(url: str) -> None:
    async with conveyor.App(url) as app:
        await app.queue("orders").send_batch([{"n": n} for n in range(6)])
        await app.backend.lease_many("orders", 1, 30)
        assert "v" not in await _last_record(app, "orders")  # the base format costs nothing
        leased = await app.backend.lease_ahead("orders", 3, 30, hand_first=2)
        assert [is_ahead(m.lease_id) for m in leased] == [False, False, True]
        header = await _last_record(app, "orders")
        assert (header["op"], header["h"], header["v"]) == ("lease", 2, records.HANDING_FORMAT)
        assert records.HANDING_FORMAT == 2  # the format lease ahead's "h" came in


async def test_record_format_1_hands_nothing_in_lease_records(url: str) -> None:
    async with conveyor.App(f"{url}&record_format=1") as pinned, conveyor.App(url) as other:
        await pinned.queue("orders").send_batch([{"n": n} for n in range(4)])
        leased = await pinned.backend.lease_ahead("orders", 4, 30, hand_first=2)
        assert all(is_ahead(m.lease_id) for m in leased)  # the worker begins what it starts
        header = await _last_record(pinned, "orders")
        assert "h" not in header and "v" not in header
        assert await other.core.begin("orders", [m.lease_id for m in leased[:2]]) == [True, True]
