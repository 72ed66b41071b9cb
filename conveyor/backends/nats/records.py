"""The bytes of a queue's log records: a JSON header line, then the bodies it names, back to back.

`{"op": "send", "m": [[id, content type, delay, body length, dead letter, timestamp], ...]}\n<bodies>`
(an entry has a seventh item, its dedup id, only where it has one, headers or a group; an eighth,
its headers (null for none), only where it has headers or a group; and a ninth, its ordered
message group, only where it has one: records written before any of them read as they always did)

Bodies are raw bytes (never pickled, never base64); the header says how long each is, so a body is
found again by its record's stream sequence and offset (`state.Location`) without decoding the
rest. Every other record is a header alone: a command (lease, extend, release, settle, purge,
delete, move, moved, sweep) with the token its writer waits on, a queue's settings (`meta`), one part of
a snapshot (the document itself: snapshots.py), or a `rehome` (bodies written again ahead of a
compaction, in the send layout).

Format: a record in the base format (1) declares none; a record that uses something a reader of
an earlier format would misread declares the format that introduced it (`"v": 2`), so that a
reader which does not know that format stops reading the log instead (`check_format`). Nothing
is spent on records of the base format, which sends and most commands are.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from conveyor.backends.nats.state import Arrival, Location, Move
from conveyor.headers import headers_size, load_headers
from conveyor.limits import DEFAULT_DEDUP_WINDOW_SECONDS, DEFAULT_PARTITIONS
from conveyor.types import CONTENT_TYPES, ContentType, DeadLetterInfo, PullConsumer, QueueSettings

# v5: a message's headers (null for none) and group (the 13th and 14th items of a message, the
# 9th and 10th of a move's copy), the partition count after the pull consumer in the settings.
# Read too: v2 (no `lost`), v3 (headers as an optional 13th / 9th item, the pull consumer 6th
# setting), v4 (groups before headers, never on main: the group 13th / 9th, partitions 6th).
SNAPSHOT_VERSION = 5
#: The newest record format this conveyor reads (a record without "v" is format 1, the base).
#: 2: a lease record's "h" (lease ahead handing its first k in the record itself).
#: A writer uses a format's records only up to the URL's `record_format` (a rolling upgrade pins
#: the format the older release reads); docs/nats.md, "Upgrades", lists the formats.
RECORD_FORMAT = 2
#: The format of a lease record that hands its first k ("h"): a reader of format 1 ignores "h",
#: so those leases stay read ahead to it and their settles are stale there.
HANDING_FORMAT = 2
_CONTENT_TYPES: dict[str, ContentType] = {name: name for name in CONTENT_TYPES}


class FormatTooNew(ValueError):
    """A record or snapshot of a format newer than this conveyor reads; the message says what it
    is, the format it is in and the newest this conveyor reads."""

    def __init__(self, what: str, found: object, known: int, seq: int | None = None) -> None:
        super().__init__(f"{what} in format {found!r} (this conveyor reads formats up to {known})")
        self.found = found
        self.known = known
        self.seq = seq  # the record's stream sequence, where known


def check_format(header: dict[str, Any], seq: int) -> None:
    """FormatTooNew if record `seq`'s header declares a format (its "v") newer than RECORD_FORMAT."""
    found = header.get("v", 1)
    if type(found) is not int or not 1 <= found <= RECORD_FORMAT:
        raise FormatTooNew(f"a {header.get('op')!r} record", found, RECORD_FORMAT, seq)


def unknown_kind(header: dict[str, Any], seq: int) -> FormatTooNew:
    """Record `seq` is of a kind this conveyor does not know: only a newer conveyor writes one."""
    what = f"a record of a kind unknown here ({header.get('op')!r})"
    return FormatTooNew(what, header.get("v", 1), RECORD_FORMAT, seq)


@dataclass(frozen=True, slots=True)
class Record:
    op: str
    header: dict[str, Any]
    #: where the bodies start in the record's payload
    start: int
    blob: memoryview


@dataclass(slots=True)
class Outgoing:
    """A message on its way into a record, body in hand (`Arrival` is what reading it gives).
    Not frozen: a frozen dataclass's __init__ costs a microsecond more per message sent; nothing
    changes one (partitions.stamped makes new ones)."""

    id: str
    body: bytes
    content_type: ContentType
    delay: float | None = None
    dead_letter: DeadLetterInfo | None = None
    timestamp: float | None = None
    dedup_id: str | None = None
    headers: dict[str, str] | None = None
    group: str | None = None


def decode(data: bytes) -> Record:
    end = data.find(b"\n")
    if end < 0:
        header = json.loads(data)
        return Record(str(header.get("op", "")), header, len(data), memoryview(b""))
    header = json.loads(data[:end])
    return Record(str(header.get("op", "")), header, end + 1, memoryview(data)[end + 1 :])


#: one encoder for every record header (json.dumps with options builds one per call)
_HEADER_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def encode(header: dict[str, Any], blob: bytes | Sequence[bytes] = b"") -> bytes:
    head = _HEADER_ENCODER.encode(header).encode()
    if isinstance(blob, bytes):
        return head + b"\n" + blob
    return b"".join((head, b"\n", *blob))


def dead_letter_dict(info: DeadLetterInfo | None) -> dict[str, Any] | None:
    return None if info is None else info.to_dict()


def content_type_of(name: str) -> ContentType:
    kind = _CONTENT_TYPES.get(name)
    if kind is None:
        raise ValueError(f"unknown content type {name!r} in a NATS log record")
    return kind


# -- sends ---------------------------------------------------------------------------------------


def send_entries(messages: Sequence[Outgoing]) -> list[list[Any]]:
    """One entry per message; a seventh item, the dedup id, only where there is one, headers or a
    group; an eighth, the headers (null for none), only where there are some or a group; a ninth,
    the group, only where there is one (older records stay as they were)."""
    return [_send_entry(m) for m in messages]


def _send_entry(m: Outgoing) -> list[Any]:
    entry = [m.id, m.content_type, m.delay, len(m.body), dead_letter_dict(m.dead_letter), m.timestamp]
    if m.group is not None:
        entry += [m.dedup_id, m.headers, m.group]
    elif m.headers is not None:
        entry += [m.dedup_id, m.headers]
    elif m.dedup_id is not None:
        entry.append(m.dedup_id)
    return entry


def encode_send(
    messages: Sequence[Outgoing],
    fan_out: Sequence[tuple[str, str, Sequence[Outgoing]]] = (),
    *,
    checked: str | None = None,
) -> bytes:
    """A send record; `fan_out` (move id, queue, messages) adds copies for other queues, which
    wait in this queue's outbox until they are stored there (one write commits the messages of
    every queue it names). `checked` (a token its writer waits on) makes it a send into a
    bounded queue: every reader stores its messages only if they fit the queue's backlog limits
    as of that record, else none of them, and tells the writer which."""
    header: dict[str, Any] = {"op": "send", "m": send_entries(messages)}
    if checked is not None:
        header["tok"], header["lim"] = checked, 1
    bodies = [m.body for m in messages]
    if fan_out:
        header["x"] = [
            [move_id, destination, send_entries(copies)] for move_id, destination, copies in fan_out
        ]
        bodies.extend(m.body for _, _, copies in fan_out for m in copies)
    return encode(header, bodies)


def send_size(message: Outgoing) -> int:
    """About how many bytes `message` adds to a send record."""
    dead = 0 if message.dead_letter is None else 200 + len(message.dead_letter.error)
    return len(message.body) + len(message.id) + 40 + dead + headers_size(message.headers)


def decode_arrivals(record: Record, seq: int) -> list[Arrival]:
    """The messages of send record `seq`, each with where its body lies."""
    arrivals, _ = _arrivals(record.header["m"], seq, record.start)
    return arrivals


def decode_fan_out(record: Record, seq: int, now: float) -> list[Move]:
    """The copies send record `seq` carries for other queues, as moves begun at `now`."""
    offset = record.start + sum(entry[3] for entry in record.header["m"])
    moves = []
    for move_id, destination, entries in record.header.get("x", ()):
        copies, offset = _arrivals(entries, seq, offset)
        moves.append(Move(move_id, destination, copies, now))
    return moves


def _arrivals(entries: list[list[Any]], seq: int, offset: int) -> tuple[list[Arrival], int]:
    arrivals = []
    for entry in entries:
        message_id, content_type, delay, length, dead, timestamp = entry[:6]
        arrivals.append(
            Arrival(
                id=message_id,
                content_type=content_type_of(content_type),
                location=(seq, offset, length),
                delay=delay,
                dead_letter=None if dead is None else DeadLetterInfo.from_dict(dead),
                timestamp=timestamp,
                dedup_id=entry[6] if len(entry) > 6 else None,
                headers=load_headers(entry[7]) if len(entry) > 7 and entry[7] is not None else None,
                group=entry[8] if len(entry) > 8 else None,
            )
        )
        offset += length
    return arrivals, offset


# -- bodies written again ahead of a compaction ------------------------------------------------------


def encode_rehome(bodies: Sequence[tuple[str, bytes]]) -> bytes:
    return encode(
        {"op": "rehome", "m": [[message_id, len(body)] for message_id, body in bodies]},
        [b for _, b in bodies],
    )


def decode_rehome(record: Record, seq: int) -> list[tuple[str, Location]]:
    moved = []
    offset = record.start
    for message_id, length in record.header["m"]:
        moved.append((str(message_id), (seq, offset, int(length))))
        offset += length
    return moved


# -- settings ------------------------------------------------------------------------------------


def encode_meta(settings: QueueSettings, paused: bool, created_at: float, copies: int | None = None) -> bytes:
    """A queue's settings record; `copies` (for a partition's log) the sequence of the queue's
    own settings record this one copies."""
    header: dict[str, Any] = {
        "op": "meta",
        "delay": settings.delivery_delay,
        "retention": settings.retention_seconds,
        "dedup": settings.dedup_window_seconds,
        "paused": paused,
        "created": created_at,
    }
    if settings.max_backlog_messages is not None:
        header["maxm"] = settings.max_backlog_messages
    if settings.max_backlog_bytes is not None:
        header["maxb"] = settings.max_backlog_bytes
    if settings.pull_consumer is not None:
        header["pull"] = settings.pull_consumer.to_dict()
    if settings.partitions != DEFAULT_PARTITIONS:
        header["parts"] = settings.partitions
    if copies is not None:
        header["bseq"] = copies
    return encode(header)


def decode_meta(record: Record) -> tuple[QueueSettings, bool, float]:
    header = record.header
    # a queue created before deduplication has the default window
    settings = queue_settings(
        header["delay"],
        header["retention"],
        header.get("dedup"),
        header.get("maxm"),
        header.get("maxb"),
        header.get("pull"),
        header.get("parts"),
    )
    return settings, bool(header["paused"]), float(header["created"])


def queue_settings(
    delay: Any,
    retention: Any,
    dedup: Any = None,
    most_messages: Any = None,
    most_bytes: Any = None,
    pull: Any = None,
    partitions: Any = None,
) -> QueueSettings:
    return QueueSettings(
        delivery_delay=float(delay),
        retention_seconds=float(retention),
        dedup_window_seconds=float(DEFAULT_DEDUP_WINDOW_SECONDS if dedup is None else dedup),
        max_backlog_messages=None if most_messages is None else int(most_messages),
        max_backlog_bytes=None if most_bytes is None else int(most_bytes),
        # a queue created before pull consumer settings has none
        pull_consumer=None if pull is None else PullConsumer.from_dict(pull),
        # a queue created before partitions has one
        partitions=DEFAULT_PARTITIONS if partitions is None else int(partitions),
    )
