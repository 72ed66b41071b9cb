"""The bytes of a queue's log records: a JSON header line, then the bodies it names, back to back.

`{"op": "send", "m": [[id, content type, delay, body length, dead letter, timestamp], ...]}\n<bodies>`

Bodies are raw bytes (never pickled, never base64); the header says how long each is. Every other
record is a header alone: a command (lease, extend, release, settle, purge, move, moved, sweep)
with the token its writer waits on, a queue's settings (`meta`), or one part of a snapshot.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from conveyor.backends.nats.state import Arrival, Message, Move, QueueState
from conveyor.types import CONTENT_TYPES, ContentType, DeadLetterInfo, QueueSettings

SNAPSHOT_VERSION = 1
_CONTENT_TYPES: dict[str, ContentType] = {name: name for name in CONTENT_TYPES}


@dataclass(frozen=True, slots=True)
class Record:
    op: str
    header: dict[str, Any]
    blob: memoryview


def decode(data: bytes) -> Record:
    end = data.find(b"\n")
    if end < 0:
        header = json.loads(data)
        return Record(str(header.get("op", "")), header, memoryview(b""))
    header = json.loads(data[:end])
    return Record(str(header.get("op", "")), header, memoryview(data)[end + 1 :])


def encode(header: dict[str, Any], blob: bytes | Sequence[bytes] = b"") -> bytes:
    head = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    if isinstance(blob, bytes):
        return head + b"\n" + blob
    return b"".join((head, b"\n", *blob))


def _dead(info: DeadLetterInfo | None) -> dict[str, Any] | None:
    return None if info is None else info.to_dict()


def _content_type(name: str) -> ContentType:
    kind = _CONTENT_TYPES.get(name)
    if kind is None:
        raise ValueError(f"unknown content type {name!r} in a NATS log record")
    return kind


# -- sends ---------------------------------------------------------------------------------------


def send_entries(arrivals: Sequence[Arrival]) -> list[list[Any]]:
    return [[a.id, a.content_type, a.delay, len(a.body), _dead(a.dead_letter), a.timestamp] for a in arrivals]


def encode_send(arrivals: Sequence[Arrival], fan_out: Sequence[Move] = ()) -> bytes:
    """A send record; `fan_out` adds copies for other queues, which wait in this queue's outbox
    until they are stored there (one write commits the messages of every queue it names)."""
    header: dict[str, Any] = {"op": "send", "m": send_entries(arrivals)}
    bodies = [a.body for a in arrivals]
    if fan_out:
        header["x"] = [[move.id, move.destination, send_entries(move.copies)] for move in fan_out]
        bodies.extend(a.body for move in fan_out for a in move.copies)
    return encode(header, bodies)


def send_size(arrival: Arrival) -> int:
    """About how many bytes `arrival` adds to a send record."""
    dead = 0 if arrival.dead_letter is None else 200 + len(arrival.dead_letter.error)
    return len(arrival.body) + len(arrival.id) + 40 + dead


def decode_arrivals(record: Record) -> list[Arrival]:
    return _arrivals(record.header["m"], record.blob)


def decode_fan_out(record: Record, now: float) -> list[Move]:
    """The copies a send record carries for other queues, as moves begun at `now`."""
    offset = sum(entry[3] for entry in record.header["m"])
    moves = []
    for move_id, destination, entries in record.header.get("x", ()):
        size = sum(entry[3] for entry in entries)
        moves.append(Move(move_id, destination, _arrivals(entries, record.blob[offset : offset + size]), now))
        offset += size
    return moves


def _arrivals(entries: list[list[Any]], blob: memoryview) -> list[Arrival]:
    arrivals = []
    offset = 0
    for message_id, content_type, delay, length, dead, timestamp in entries:
        body = bytes(blob[offset : offset + length])
        offset += length
        arrivals.append(
            Arrival(
                id=message_id,
                body=body,
                content_type=_content_type(content_type),
                delay=delay,
                dead_letter=None if dead is None else DeadLetterInfo.from_dict(dead),
                timestamp=timestamp,
            )
        )
    return arrivals


# -- settings ------------------------------------------------------------------------------------


def encode_meta(settings: QueueSettings, paused: bool, created_at: float) -> bytes:
    return encode(
        {
            "op": "meta",
            "delay": settings.delivery_delay,
            "retention": settings.retention_seconds,
            "paused": paused,
            "created": created_at,
        }
    )


def decode_meta(record: Record) -> tuple[QueueSettings, bool, float]:
    header = record.header
    settings = QueueSettings(float(header["delay"]), float(header["retention"]))
    return settings, bool(header["paused"]), float(header["created"])


# -- snapshots -----------------------------------------------------------------------------------


def encode_state(state: QueueState) -> bytes:
    """Everything `QueueState` holds, bodies included, as one byte string (split into parts by
    the writer)."""
    bodies: list[bytes] = []
    messages = []
    for m in state.messages.values():
        bodies.append(m.body)
        messages.append(
            [
                m.id,
                m.content_type,
                m.timestamp,
                m.visible_at,
                m.order,
                m.attempts,
                m.lease_token,
                _dead(m.dead_letter),
                len(m.body),
            ]
        )
    moves = []
    for move in state.outbox.values():
        bodies.extend(a.body for a in move.copies)
        moves.append([move.id, move.destination, move.started_at, send_entries(move.copies)])
    header = {
        "v": SNAPSHOT_VERSION,
        "settings": [state.settings.delivery_delay, state.settings.retention_seconds],
        "paused": state.paused,
        "created": state.created_at,
        "now": state.now,
        "messages": messages,
        "moves": moves,
    }
    return encode(header, bodies)


def decode_state(name: str, data: bytes) -> QueueState:
    record = decode(data)
    header = record.header
    if header.get("v") != SNAPSHOT_VERSION:
        raise ValueError(f"unknown snapshot version {header.get('v')!r} in the log of queue {name!r}")
    state = QueueState(name)
    delay, retention = header["settings"]
    state.set_meta(QueueSettings(float(delay), float(retention)), bool(header["paused"]), header["created"])
    state.now = float(header["now"])
    blob = record.blob
    offset = 0
    for message_id, kind, timestamp, visible_at, order, attempts, token, dead, length in header["messages"]:
        message = Message(
            id=message_id,
            body=bytes(blob[offset : offset + length]),
            content_type=_content_type(kind),
            timestamp=timestamp,
            visible_at=visible_at,
            order=order,
            attempts=attempts,
            lease_token=token,
            dead_letter=None if dead is None else DeadLetterInfo.from_dict(dead),
        )
        offset += length
        state.messages[message.id] = message
        state.bytes += length
        state.schedule(message)
    for move_id, destination, started_at, entries in header["moves"]:
        size = sum(entry[3] for entry in entries)
        state.outbox[move_id] = Move(
            move_id, destination, _arrivals(entries, blob[offset : offset + size]), started_at
        )
        offset += size
    return state
