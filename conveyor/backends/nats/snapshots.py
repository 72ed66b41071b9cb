"""A queue's state as a snapshot (one JSON document) and back, a slice at a time.

A 1M-message queue's snapshot is ~125 MB: encoded or decoded in one call it held the event loop
for 4 to 7 seconds, and every other task of the process (a worker's batches, its heartbeats, the
HTTP API) waited meanwhile. A worker thread does not help: json's C encoder and decoder hold the
GIL throughout. So the work is done in steps, generators that yield every SLICE entries;
`encode` and `decode` give the event loop a turn at each yield, the `*_state` functions run them
through at once (small states, tests).

Encoding works on a `FrozenState` (`QueueState.freeze`): the state as it was at the snapshot's
base, however many records are applied while it is written. The document is byte for byte what
one `json.dumps` of it gives, so the format is unchanged (records.SNAPSHOT_VERSION).
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable, Generator, Iterable
from dataclasses import dataclass
from json.scanner import make_scanner
from operator import attrgetter
from typing import Any, TypeVar

from conveyor.backends.nats.records import (
    SNAPSHOT_VERSION,
    FormatTooNew,
    content_type_of,
    dead_letter_dict,
    queue_settings,
)
from conveyor.backends.nats.state import Arrival, FrozenState, Message, Move, QueueState
from conveyor.headers import load_headers
from conveyor.types import DeadLetterInfo

#: Messages (or moves' copies, or dedup claims) encoded or decoded between two turns of the loop:
#: a few milliseconds each.
SLICE = 2000

_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
#: what json.loads runs, one value at a time: (value, where it ends) from (text, where it starts)
_SCAN = make_scanner(json.JSONDecoder())  # type: ignore[arg-type]  # typeshed: it takes a decoder
_SPACE = re.compile(r"[ \t\n\r]*")
_SPACES = frozenset(" \t\n\r")
#: a message entry's headers and group when it has neither (see SNAPSHOT_VERSION)
_NO_EXTRA = [None, None]
#: the top-level lists a decode reads an item at a time (the rest, small, in one call)
_LONG_LISTS = frozenset({"messages", "moves", "dedup"})

_T = TypeVar("_T")
#: a step generator: yields where the loop may run, returns its result
Steps = Generator[None, None, _T]


@dataclass(frozen=True, slots=True)
class Snapshot:
    data: bytes
    #: the lowest stream sequence holding a body the snapshot points at (inf: none)
    first_record: float


async def run(steps: Steps[_T]) -> _T:
    """Run `steps`, letting the event loop run other tasks at each of its yields."""
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]
        await asyncio.sleep(0)


def run_through(steps: Steps[_T]) -> _T:
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]


async def encode(frozen: FrozenState) -> Snapshot:
    return await run(encode_steps(frozen))


async def decode(name: str, data: bytes) -> QueueState:
    return await run(decode_steps(name, data))


def encode_state(state: QueueState) -> bytes:
    """The snapshot of `state` now, in one go."""
    frozen = state.freeze(0)  # nothing changes before thaw
    try:
        return run_through(encode_steps(frozen)).data
    finally:
        state.thaw()


def decode_state(name: str, data: bytes) -> QueueState:
    return run_through(decode_steps(name, data))


# -- encoding ------------------------------------------------------------------------------------


def _message_entry(m: Message) -> list[Any]:
    return [
        m.id,
        m.content_type,
        m.timestamp,
        m.visible_at,
        m.order,
        m.attempts,
        m.lease_token,
        dead_letter_dict(m.dead_letter),
        m.size,
        m.record,
        m.offset,
        m.lost,
        m.headers,
        m.group,
    ]


def _copy_entry(c: Arrival) -> list[Any]:
    return [
        c.id,
        c.content_type,
        c.delay,
        dead_letter_dict(c.dead_letter),
        c.timestamp,
        *c.location,
        c.headers,
        c.group,
    ]


def _sliced(items: list[_T], encode_one: Callable[[_T], Any]) -> Steps[list[bytes]]:
    """`items` encoded as a JSON list's items (no brackets), in pieces of SLICE."""
    pieces: list[bytes] = []
    for start in range(0, len(items), SLICE):
        text = _ENCODER.encode([encode_one(item) for item in items[start : start + SLICE]])
        if pieces:
            pieces.append(b",")
        pieces.append(text[1:-1].encode())
        yield
    return pieces


def _in_order(messages: list[Message]) -> Steps[bool]:
    last = -1
    for start in range(0, len(messages), SLICE):
        for message in messages[start : start + SLICE]:
            if message.order < last:
                return False
            last = message.order
        yield
    return True


def encode_steps(frozen: FrozenState) -> Steps[Snapshot]:
    """Everything a queue's state holds as one JSON document (split into parts by the writer);
    bodies stay in the log, named by their location."""
    # messages in send order (a group's members are restored in it): a state's messages are in
    # it already (added as their records come), so the sort is a check, unless they are not
    messages = frozen.messages
    if not (yield from _in_order(messages)):
        messages = sorted(messages, key=attrgetter("order"))
    first_record = float("inf")

    def message_entry(m: Message) -> list[Any]:
        nonlocal first_record
        m = frozen.message(m)
        if m.record < first_record:
            first_record = m.record
        return _message_entry(m)

    def copy_entry(c: Arrival) -> list[Any]:
        nonlocal first_record
        if c.location[0] < first_record:
            first_record = c.location[0]
        return _copy_entry(c)

    settings = frozen.settings
    head = _ENCODER.encode(
        {
            "v": SNAPSHOT_VERSION,
            "settings": [
                settings.delivery_delay,
                settings.retention_seconds,
                settings.max_backlog_messages,
                settings.max_backlog_bytes,
                settings.dedup_window_seconds,
                None if settings.pull_consumer is None else settings.pull_consumer.to_dict(),
                settings.partitions,
            ],
            "paused": frozen.paused,
            "created": frozen.created_at,
            "now": frozen.now,
        }
    )
    pieces = [head[:-1].encode(), b',"messages":[']
    pieces += yield from _sliced(messages, message_entry)
    pieces.append(b'],"moves":[')
    for index, move in enumerate(frozen.outbox):  # a move's copies may be many (a replay)
        copies = yield from _sliced(move.copies, copy_entry)
        start = _ENCODER.encode([move.id, move.destination, move.started_at])[:-1]
        pieces += [b"," if index else b"", start.encode(), b",[", *copies, b"]]"]
    pieces.append(b'],"dedup":[')
    pieces += yield from _sliced(frozen.dedup, lambda claim: [claim[0], *claim[1]])
    pieces.append(b"]")
    if frozen.meta_seq:  # a partition's: which settings record of its queue it holds a copy of
        pieces.append(f',"mseq":{frozen.meta_seq}'.encode())
    pieces.append(b"}")
    return Snapshot(b"".join(pieces), first_record)


# -- decoding ------------------------------------------------------------------------------------


def _document(data: bytes) -> Steps[dict[str, Any]]:
    """A JSON object, its long lists (_LONG_LISTS) read an item at a time."""
    text = data.decode()
    scan = _SCAN
    space = _SPACE.match

    def skip(pos: int) -> int:
        found = space(text, pos)
        return pos if found is None else found.end()

    def expect(pos: int, char: str) -> int:
        if text[pos : pos + 1] != char:
            raise json.JSONDecodeError(f"Expecting {char!r}", text, pos)
        return skip(pos + 1)

    document: dict[str, Any] = {}
    pos = expect(skip(0), "{")
    done = text[pos : pos + 1] == "}"
    try:
        while not done:
            key, pos = scan(text, pos)
            if not isinstance(key, str):
                raise json.JSONDecodeError("Expecting a property name", text, pos)
            pos = expect(skip(pos), ":")
            if key in _LONG_LISTS and text[pos : pos + 1] == "[":
                items: list[Any] = []
                append = items.append
                pos = skip(pos + 1)
                end = text[pos : pos + 1] == "]"
                while not end:
                    item, pos = scan(text, pos)
                    append(item)
                    if len(items) % SLICE == 0:
                        yield
                    if text[pos : pos + 1] == ",":  # as the writer writes them: no spaces
                        pos += 1
                        if text[pos : pos + 1] in _SPACES:
                            pos = skip(pos)
                        continue
                    pos = skip(pos)
                    end = text[pos : pos + 1] == "]"
                    if not end:
                        pos = expect(pos, ",")
                pos += 1
                value: Any = items
            else:
                value, pos = scan(text, pos)
            document[key] = value
            pos = skip(pos)
            done = text[pos : pos + 1] == "}"
            pos = skip(pos + 1) if done else expect(pos, ",")
    except StopIteration as missing:  # the scanner's way of saying so
        raise json.JSONDecodeError("Expecting value", text, missing.value) from None
    if pos != len(text):
        raise json.JSONDecodeError("Extra data", text, pos)
    return document


def decode_steps(name: str, data: bytes) -> Steps[QueueState]:
    header = yield from _document(data)
    version = header.get("v")
    if type(version) is int and version > SNAPSHOT_VERSION:
        raise FormatTooNew("a snapshot", version, SNAPSHOT_VERSION)
    if version not in (2, 3, 4, SNAPSHOT_VERSION):
        raise ValueError(f"unknown snapshot version {header.get('v')!r} in the log of queue {name!r}")
    state = QueueState(name)
    # settings: delay, retention, then (a snapshot from after them) the backlog limits and the
    # dedup window, then the pull consumer; a snapshot from before deduplication has the default
    # window, one from before pull consumers none
    delay, retention, *rest = header["settings"]
    most_messages, most_bytes, dedup, *extra = (*rest, None, None, None, None, None)[:5]
    # the sixth setting: v3 the pull consumer, v4 (groups before headers) the partition count
    pull, partitions = (None, extra[0]) if version == 4 else extra
    settings = queue_settings(delay, retention, dedup, most_messages, most_bytes, pull, partitions)
    state.set_meta(settings, bool(header["paused"]), header["created"])
    state.now = float(header["now"])
    # in send order (a snapshot before v4 may not be): a group's members are restored in it
    entries: list[list[Any]] = header["messages"]
    if not (yield from _entries_in_order(entries)):
        entries = sorted(entries, key=lambda entry: entry[4])
    for start in range(0, len(entries), SLICE):
        for entry in entries[start : start + SLICE]:
            state.add(_message(version, entry))
        yield
    for move_id, destination, started_at, items in header["moves"]:
        copies: list[Arrival] = []
        for start in range(0, len(items), SLICE):
            copies += _copies(version, items[start : start + SLICE])
            yield
        state.outbox[move_id] = Move(move_id, destination, copies, started_at)
    for dedup_id, message_id, until in header.get("dedup", ()):
        state.dedup[dedup_id] = (message_id, until)
    state.meta_seq = int(header.get("mseq", 0))
    return state


def _entries_in_order(entries: list[list[Any]]) -> Steps[bool]:
    last = -1
    for start in range(0, len(entries), SLICE):
        for entry in entries[start : start + SLICE]:
            if entry[4] < last:
                return False
            last = entry[4]
        yield
    return True


def _message(version: int, entry: list[Any]) -> Message:
    message_id, kind, timestamp, visible_at, order, attempts, token, dead, size, record, offset = entry[:11]
    extra = entry[12:]
    return Message(  # positional: a million of these on a large queue's load
        message_id,
        content_type_of(kind),
        timestamp,
        visible_at,
        order,
        size,
        record,
        offset,
        attempts,
        token,
        0,
        None if dead is None else DeadLetterInfo.from_dict(dead),
        entry[11] if len(entry) > 11 else 0,
        None if extra == _NO_EXTRA else _snapshot_headers(version, extra),
        None if extra == _NO_EXTRA else _snapshot_group(version, extra),
    )


def _copies(version: int, entries: Iterable[list[Any]]) -> Iterable[Arrival]:
    # a copy's items past the eighth: headers and group (see SNAPSHOT_VERSION)
    for copy_id, kind, delay, dead, timestamp, record, offset, size, *rest in entries:
        yield Arrival(
            copy_id,
            content_type_of(kind),
            (record, offset, size),
            delay,
            None if dead is None else DeadLetterInfo.from_dict(dead),
            timestamp,
            headers=_snapshot_headers(version, rest),
            group=_snapshot_group(version, rest),
        )


def _snapshot_headers(version: int, extra: list[Any]) -> dict[str, str] | None:
    """A snapshot entry's headers from its items past the fixed ones (see SNAPSHOT_VERSION)."""
    if version == 4 or not extra or extra[0] is None:
        return None
    return load_headers(extra[0])


def _snapshot_group(version: int, extra: list[Any]) -> str | None:
    """A snapshot entry's group from its items past the fixed ones (see SNAPSHOT_VERSION)."""
    if version == 4:
        return extra[0] if extra else None
    if version == SNAPSHOT_VERSION and len(extra) > 1:
        return str(extra[1]) if extra[1] is not None else None
    return None
