"""A queue's state in this process, kept current by reading the queue's log as it grows.

A view reads the stream from its first record (or its latest snapshot) and applies every record,
in order, at the server's timestamp of that record; then it applies each new record as the
server pushes it. A command (lease, settle, ...) is written to the log and its outcome is what
this view computes when it applies that record, which every other process computes the same.

A record or snapshot of a format newer than this conveyor reads (records.FormatTooNew: a newer
conveyor wrote it) stops the reading: nothing from it on is applied, the reason is logged once,
and every later use of the view raises StorageUnusable with it (`failed`), rather than apply
records this version would misread.

Records that vanish under a reader (a compaction purged them before it got there) make it read
again from the snapshot; a stream deleted and made again under the same name is noticed by its
creation time and read again too.

Bodies are read from the log when needed (`bodies`), by record, through a small cache: the state
holds where each body lies, not the body.

Compaction: once the log holds COMPACT_MIN_BYTES more than twice the bodies it still needs, the
view writes the bodies of the oldest live messages again further on (a `rehome` record, up to
REHOME_MAX_BYTES), the state as a snapshot (JSON, in parts of SNAPSHOT_PART_BYTES), and purges the
records below both the snapshot and every body still needed. Several processes may do this at
once; a reader starting later loads a complete snapshot whose base is at or past where the log
begins, and applies the records after that base. A large queue's snapshot takes seconds to encode
or decode: both run a slice at a time (snapshots.py) while this view keeps applying records, the
encoding of a state frozen at the snapshot's base (`QueueState.freeze`), the decoding while the
records that come are held.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import random
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from nats.aio.msg import Msg

from conveyor.backends.base import make_lease_id, new_token
from conveyor.backends.nats import records, snapshots
from conveyor.backends.nats.jetstream import JetStream, WrongLastSequence, raise_if_cancelled, split_log
from conveyor.backends.nats.records import Record
from conveyor.backends.nats.state import ORDER_SHIFT, Location, QueueState
from conveyor.errors import BackendUnavailable, StorageUnusable
from conveyor.types import DeadLetterInfo, LeasedMessage

log = logging.getLogger("conveyor.nats")

#: How long a command waits for this process to see its record applied, then reports its
#: outcome as unknown (BackendUnavailable): the record stands, like any write whose reply is lost.
APPLY_TIMEOUT_SECONDS = 30.0
#: A log is compacted when it holds this much more than twice the size of the state.
COMPACT_MIN_BYTES = 8 * 1024 * 1024
#: ... and when the records written since the last snapshot are this many times its size: every
#: reader receives each snapshot, so on a large backlog (a 100 MB snapshot at 1M messages)
#: snapshots stay at most a third of what readers receive. Without it a draining 1M backlog was
#: snapshotted every few seconds, and readers fell past the server's 10 s write deadline.
SNAPSHOT_AMORTIZE = 2.0
#: A snapshot is written in parts of this many bytes (under the server's 1 MB message limit).
SNAPSHOT_PART_BYTES = 512 * 1024
#: A compaction writes at most this many bytes of live bodies again to purge the records below them.
REHOME_MAX_BYTES = 4 * 1024 * 1024
#: Records whose bodies were read lately are kept up to this many bytes (leases go oldest first,
#: so consecutive leases read the same records).
BODY_CACHE_BYTES = 4 * 1024 * 1024
_SNAP_PREFIX = b'{"op":"snap"'


def record_position(reply: str) -> tuple[str, int, float]:
    """The consumer that delivered a record, its stream sequence and the server's timestamp
    (seconds), from the reply subject JetStream delivers it with: `$JS.ACK.<stream>.<consumer>.
    <delivered>.<stream seq>.<consumer seq>.<timestamp ns>.<pending>` (servers >= 2.10 may add a
    domain, an account hash and a token: `$JS.ACK.<domain>.<hash>.<stream>...<pending>.<token>`)."""
    tokens = reply.split(".")
    offset = 2 if len(tokens) >= 12 else 0
    return tokens[3 + offset], int(tokens[5 + offset]), int(tokens[7 + offset]) / 1_000_000_000


def worth_compacting(log_bytes: int, live_bytes: int, snapshot_bytes: int, factor: float) -> bool:
    """Whether a log of `log_bytes` (since its last snapshot: the live bodies, then every record
    written after) is worth a snapshot: past COMPACT_MIN_BYTES, twice the live bodies, and
    SNAPSHOT_AMORTIZE times the last snapshot's size in records written since; `factor` (1 to
    1.5) spreads the readers that would all compact at once."""
    return (
        log_bytes > COMPACT_MIN_BYTES * factor
        and log_bytes > 2 * live_bytes * factor
        and log_bytes - live_bytes > SNAPSHOT_AMORTIZE * snapshot_bytes * factor
    )


class QueueView:
    """One log's state: a queue's, or one partition's of a partitioned queue (`log`, see
    jetstream.log_name); `queue` is the queue's name either way."""

    def __init__(self, js: JetStream, log: str) -> None:
        self.js = js
        self.log = log
        self.queue = split_log(log)[0]
        self.state = QueueState(self.queue)
        self.applied = 0  # stream sequence of the last record applied
        self.created: str | None = None
        #: why this log is read no further (a format newer than this conveyor's), else None
        self.failed: str | None = None
        self._generation = 0
        self._subscription: Any = None
        self._first_seen: int | None = None
        self._last_seen = 0
        self._consumer: str | None = None  # the consumer delivering the records
        self._held: list[Msg] | None = None  # records held while the stream's identity is checked
        # records (their header line only) held while looking for a snapshot to start from
        self._loading: list[tuple[int, float, int, bytes]] | None = None
        self._parts: dict[str, dict[int, bytes]] = {}
        self._decoding = False  # a complete snapshot is being loaded
        self._results: dict[str, asyncio.Future[Any]] = {}
        self._progress: list[tuple[int, int, asyncio.Future[None]]] = []
        self._progress_ids = itertools.count()
        self._wake = asyncio.Event()
        self._log_bytes = 0
        self._snapshot_bytes = 0  # the last snapshot seen written, all its parts
        self._snapshot_parts_bytes = 0  # the parts of the one being written, so far
        self._compact_factor = random.uniform(1.0, 1.5)  # spreads compactions of several readers
        self._tasks: set[asyncio.Task[None]] = set()
        self._compacting = False
        self._closed = False
        self._cache: OrderedDict[int, bytes] = OrderedDict()  # record seq -> payload
        self._cache_bytes = 0

    # -- reading the log ---------------------------------------------------------------------

    async def start(self) -> None:
        stream = await self.js.require_stream(self.log)
        self.created = stream.created
        self._subscription = await self._follow(self._generation)
        await self.wait_applied(stream.last_seq)

    async def close(self) -> None:
        self._generation += 1
        self._closed = True
        current = asyncio.current_task()
        for task in self._tasks:
            if task is not current:  # a task of this view may close it (its queue was deleted)
                task.cancel()
        await self._unsubscribe()
        for future in self._results.values():
            if not future.done():
                future.cancel()
        if self._consumer is not None:  # at once: a stream with no consumer is one nobody reads
            with contextlib.suppress(Exception):
                await self.js.delete_consumer(self.log, self._consumer)

    async def _follow(self, generation: int) -> Any:
        async def on_record(msg: Msg) -> None:
            if generation != self._generation:
                return
            try:
                self._receive(msg)
            except records.FormatTooNew as exc:
                self._stop(exc, msg.reply)
            except Exception:  # a bug here must not pass in silence: read everything again
                log.exception(
                    "queue %s: applying record %s failed; reading the log again", self.log, msg.reply
                )
                self._restart()

        return await self.js.follow(self.log, on_record)

    async def _unsubscribe(self) -> None:
        subscription, self._subscription = self._subscription, None
        if subscription is not None:
            with contextlib.suppress(Exception):
                await subscription.unsubscribe()

    def _restart(self) -> None:
        """Forget the state and read the log again from its start."""
        self._generation += 1
        self.state = QueueState(self.queue)
        self.applied = 0
        self._first_seen = None
        self._last_seen = 0
        self._consumer = None
        self._held = None
        self._loading = None
        self._parts = {}
        self._decoding = False
        self._log_bytes = 0
        self._snapshot_bytes = self._snapshot_parts_bytes = 0
        self._cache.clear()  # a queue made again numbers its records from 1 again
        self._cache_bytes = 0
        self._spawn(self._resubscribe(self._generation))

    def _stop(self, exc: records.FormatTooNew, reply: str) -> None:
        """Read this log no further: a newer conveyor wrote a record (or snapshot: the record
        `reply` delivered) this one would misread. Logged once; writers waiting here and every
        later use raise StorageUnusable."""
        seq = exc.seq if exc.seq is not None else record_position(reply)[1]
        where = self.queue if self.log == self.queue else f"{self.queue} (log {self.log})"
        self.failed = (
            f"queue {where}: record {seq} of its log is {exc}: this process applies nothing of "
            f"the queue's log from there on; upgrade it (docs/nats.md, 'Upgrades')"
        )
        self._generation += 1
        log.error("%s", self.failed)
        for future in self._results.values():
            if not future.done():
                future.set_exception(StorageUnusable(self.failed))
        for _, _, waiter in self._progress:
            if not waiter.done():
                waiter.set_exception(StorageUnusable(self.failed))
        self._progress = []
        self._spawn(self._let_go())

    async def _let_go(self) -> None:
        """Stop following the log, and drop this process's consumer (it reads nothing now)."""
        await self._unsubscribe()
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            with contextlib.suppress(Exception):
                await self.js.delete_consumer(self.log, consumer)

    async def _resubscribe(self, generation: int) -> None:
        """Follow the log again, trying until it works or this reading is superseded."""
        await self._unsubscribe()
        pause = 0.0
        while generation == self._generation:
            await asyncio.sleep(pause)
            try:
                subscription = await self._follow(generation)
            except Exception as exc:  # the stream may be gone or leaderless for a while
                log.warning("reading the log of queue %s again failed: %r", self.log, exc)
                pause = min(max(pause * 2, 0.1), 5.0)
                continue
            if generation == self._generation:
                self._subscription = subscription
            else:  # superseded while subscribing
                with contextlib.suppress(Exception):
                    await subscription.unsubscribe()
            return

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _receive(self, msg: Msg) -> None:
        consumer, seq, timestamp = record_position(msg.reply)
        if consumer != self._consumer:
            if self._consumer is not None and self._held is None:
                # nats-py made a new consumer (the old one went quiet): if the queue was deleted
                # and made again meanwhile, these records belong to another log. Hold them until
                # the stream's creation time says which.
                self._held = []
                self._spawn(self._check_incarnation(self._generation))
            self._consumer = consumer
        if self._held is not None:
            self._held.append(msg)
            return
        self._take(seq, timestamp, msg.data)

    async def _check_incarnation(self, generation: int) -> None:
        try:
            stream = await self.js.stream_state(self.log)
        except Exception as exc:
            log.warning("queue %s: checking its stream failed (%r); reading its log again", self.log, exc)
            stream = None
        if generation != self._generation:
            return
        held, self._held = self._held or [], None
        if stream is None or stream.created != self.created:
            if stream is not None:
                self.created = stream.created
            self._restart()
            return
        reply = ""
        try:
            for msg in held:
                reply = msg.reply
                _, seq, timestamp = record_position(reply)
                self._take(seq, timestamp, msg.data)
        except records.FormatTooNew as exc:
            self._stop(exc, reply)
        except Exception:  # as in on_record: never in silence
            log.exception("queue %s: applying a record failed; reading the log again", self.log)
            self._restart()

    def _take(self, seq: int, timestamp: float, data: bytes) -> None:
        if self._first_seen is None:
            self._first_seen = seq
            if seq != 1:  # compacted: the state before `seq` is in a snapshot further on
                self._loading = []
        elif seq != self._last_seen + 1:
            log.info("records of queue %s were compacted under its reader; reading again", self.log)
            self._restart()
            return
        self._last_seen = seq
        if self._loading is not None:
            self._load(seq, timestamp, data)
            return
        self._apply(seq, timestamp, len(data), self._decode(seq, data))

    def _decode(self, seq: int, data: bytes) -> Record:
        try:
            return records.decode(data)
        except ValueError:
            log.error("queue %s: record %d is not a conveyor record; skipped", self.log, seq)
            return Record("unknown", {}, len(data), memoryview(b""))

    def _load(self, seq: int, timestamp: float, data: bytes) -> None:
        """Hold records until a complete snapshot with a base at or past where the log begins
        (every record after that base is still in the log), then load it and apply the records
        after its base. Held records keep their header line only: bodies are read by location."""
        assert self._loading is not None and self._first_seen is not None
        end = data.find(b"\n")
        self._loading.append((seq, timestamp, len(data), data if end < 0 else data[: end + 1]))
        if self._decoding or not data.startswith(_SNAP_PREFIX):
            return
        record = self._decode(seq, data)
        header = record.header
        base = int(header["base"])
        if base < self._first_seen - 1:  # an older snapshot, partly purged
            return
        parts = self._parts.setdefault(str(header["id"]), {})
        parts[int(header["part"])] = bytes(record.blob)
        if len(parts) < int(header["parts"]):
            return
        data = b"".join(parts[i] for i in range(len(parts)))
        self._parts, self._decoding = {}, True
        self._spawn(self._load_snapshot(self._generation, seq, base, data))

    async def _load_snapshot(self, generation: int, seq: int, base: int, data: bytes) -> None:
        """Decode the snapshot record `seq` completed a slice at a time (a large one takes
        seconds: the loop runs other tasks meanwhile, and the records that come are held), then
        apply the held records after its base."""
        try:
            state = await snapshots.decode(self.queue, data)
            if generation != self._generation:
                return  # read again meanwhile
            assert self._loading is not None
            self.state = state
            self._snapshot_bytes = len(data)
            self.applied = base
            held, self._loading, self._decoding = self._loading, None, False
            for held_seq, held_timestamp, size, head in held:
                if held_seq > base:
                    self._apply(held_seq, held_timestamp, size, self._decode(held_seq, head))
        except records.FormatTooNew as exc:  # as in on_record: a newer conveyor wrote it
            if generation == self._generation:
                if exc.seq is None:
                    exc.seq = seq
                self._stop(exc, "")
        except Exception:  # as in on_record: never in silence
            if generation == self._generation:
                log.exception("queue %s: loading its snapshot failed; reading the log again", self.log)
                self._restart()

    # -- applying records --------------------------------------------------------------------

    def _apply(self, seq: int, timestamp: float, size: int, record: Record) -> None:
        header = record.header
        if "v" in header:  # a record in a format past the base: one this conveyor reads?
            records.check_format(header, seq)
        state = self.state
        now = state.advance(timestamp)
        op = record.op
        result: Any = None
        if op == "send":
            arrivals = records.decode_arrivals(record, seq)
            # a checked send into a bounded queue: all of it if it fits, else nothing (its writer
            # hears why; records it carries for other queues go with it)
            result = state.refusal(arrivals, now) if "lim" in header else None
            if result is None:
                if state.send(arrivals, now, seq << ORDER_SHIFT):
                    self.wake()
                if "x" in header:
                    state.fan_out(records.decode_fan_out(record, seq, now))
        elif op == "lease":
            token = str(header["tok"])
            leased = state.lease(int(header["n"]), float(header["vt"]), token, now, int(header.get("h", 0)))
            if token in self._results:  # the body of each is read by the backend
                queue = self.queue
                result = [
                    (
                        LeasedMessage(
                            m.id,
                            queue,
                            b"",
                            m.content_type,
                            m.timestamp,
                            m.attempts,
                            make_lease_id(m.id, m.lease_token or token),  # handed or not
                            m.dead_letter,
                            m.lost,
                            m.headers,
                            m.group,
                        ),
                        m.location,
                    )
                    for m in leased
                ]
        elif op == "begin":
            result = state.begin(header["l"], now)
        elif op == "extend":
            result = state.extend(header["l"], float(header["vt"]), now)
        elif op == "release":
            result = state.release(header["l"], now)
            if result:
                self.wake()
        elif op == "settle":
            dead = [(i, t, n, q, DeadLetterInfo.from_dict(r)) for i, t, n, q, r in header["d"]]
            result = state.settle(header["a"], header["r"], dead, str(header["tok"]), now)
            if result.retried:
                self.wake()
        elif op == "purge":
            result = state.purge()
        elif op == "delete":
            result = state.delete(str(header["id"]), now)
            if result and state.groups:
                self.wake()  # a group's head deleted: its next is deliverable
        elif op == "move":
            result = state.move_out(str(header["to"]), header["n"], str(header["tok"]), now)
            if result.copies and state.groups:
                self.wake()  # a group's head moved out: its next is deliverable
        elif op == "moved":
            state.moved(header["ids"])
        elif op == "sweep":
            result = state.sweep(now)
            if result and state.groups:
                self.wake()  # a group's head swept: its next is deliverable
        elif op == "meta":
            # a partition's copy of its queue's settings names the queue's settings record it
            # copies: an older copy landing after a newer one (two writers) changes nothing
            copied = header.get("bseq")
            if copied is None or int(copied) > state.meta_seq:
                if copied is not None:
                    state.meta_seq = int(copied)
                if state.set_meta(*records.decode_meta(record)):
                    self.wake()
        elif op == "rehome":
            state.rehome(records.decode_rehome(record, seq))
        elif op == "snap":
            self._snapshot_parts_bytes += size
            if int(header["part"]) == int(header["parts"]) - 1:
                self._log_bytes = state.bytes  # someone compacted: about the live bodies are left
                self._snapshot_bytes, self._snapshot_parts_bytes = self._snapshot_parts_bytes, 0
        else:  # only a newer conveyor writes one: applying what follows would drift
            raise records.unknown_kind(header, seq)
        self.applied = seq
        waiting = header.get("tok")
        if waiting is not None:
            future = self._results.pop(str(waiting), None)
            if future is not None and not future.done():
                future.set_result(result)
        progress = self._progress
        while progress and progress[0][0] <= seq:
            waiter = heapq.heappop(progress)[2]
            if not waiter.done():
                waiter.set_result(None)
        self._log_bytes += size
        if not self._compacting and worth_compacting(
            self._log_bytes, state.bytes, self._snapshot_bytes, self._compact_factor
        ):
            self._compacting = True
            self._spawn(self._compact())

    # -- what the backend calls --------------------------------------------------------------

    def now(self) -> float:
        return max(time.time(), self.state.now)

    def has_visible(self) -> bool:
        due = self.state.next_due()
        return due is not None and due <= self.now()

    async def wait_applied(self, seq: int) -> None:
        if self.failed is not None:
            raise StorageUnusable(self.failed)
        if self.applied >= seq:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._progress, (seq, next(self._progress_ids), future))
        try:
            await asyncio.wait_for(future, APPLY_TIMEOUT_SECONDS)
        except TimeoutError:
            raise_if_cancelled()
            raise BackendUnavailable(
                f"queue {self.queue}: its log did not reach record {seq} within {APPLY_TIMEOUT_SECONDS:g} s"
            ) from None

    async def sync(self) -> None:
        """Apply every record stored before this call (QueueNotFound if the queue is gone)."""
        if self.failed is not None:
            raise StorageUnusable(self.failed)
        stream = await self.js.require_stream(self.log)
        if stream.created != self.created:
            self.created = stream.created
            self._restart()
        await self.wait_applied(stream.last_seq)

    async def command(self, header: dict[str, Any]) -> Any:
        """Write a command record and return its outcome as this view applies it."""
        token = str(header["tok"])
        return await self.submit(token, records.encode(header), token)

    async def submit(self, token: str, payload: bytes, msg_id: str) -> Any:
        """Write a record whose header carries `token` and return its outcome as this view
        applies it."""
        if self.failed is not None:  # its outcome would never be known here
            raise StorageUnusable(self.failed)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._results[token] = future
        try:
            seq = await self.js.publish(self.log, "log", payload, msg_id)
            for _ in range(2):
                await self.wait_applied(seq)
                if future.done():
                    return future.result()
                await self.sync()  # the queue was made again, or this reader started over
            raise BackendUnavailable(
                f"queue {self.queue}: the outcome of record {seq} is unknown (its reader started over)"
            )
        finally:
            self._results.pop(token, None)

    def sweep_every(self, interval: float, sweep: Callable[[], Awaitable[object]]) -> None:
        """Call `sweep` every `interval` seconds until closed, the first time after a random part
        of one (the readers of a queue spread out)."""

        async def loop() -> None:
            await asyncio.sleep(random.uniform(0.5, 1.0) * interval)
            while not self._closed and self.failed is None:
                try:
                    await sweep()
                except Exception as exc:  # the next one tries again
                    log.warning("queue %s: sweeping failed: %r", self.log, exc)
                await asyncio.sleep(interval)

        self._spawn(loop())

    def wake(self) -> None:
        self._wake.set()
        self._wake = asyncio.Event()

    async def wait(self, timeout: float, clock: Callable[[], float] = time.monotonic) -> None:
        """Return when a message may be deliverable, or after `timeout` seconds."""
        deadline = clock() + timeout
        while True:
            due = self.state.next_due()
            now = self.now()
            if due is not None and due <= now:
                return
            remaining = deadline - clock()
            if remaining <= 0:
                return
            if due is not None:
                remaining = min(remaining, due - now)
            event = self._wake
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), remaining)
            raise_if_cancelled()
            if event.is_set():
                return

    def due(self) -> tuple[float | None, asyncio.Event]:
        """When the earliest message becomes visible (None: none, or paused) and the event a
        record that may change it sets."""
        return self.state.next_due(), self._wake

    # -- bodies ------------------------------------------------------------------------------

    async def bodies(self, locations: Sequence[Location]) -> list[bytes | None]:
        """The bodies at `locations`, one read per record not in the cache; None where the record
        is gone (purged by a compaction since: the message's location has moved on)."""
        wanted = {location[0] for location in locations} - self._cache.keys()
        if wanted:
            ordered = sorted(wanted)
            payloads = await asyncio.gather(*(self.js.record(self.log, seq) for seq in ordered))
            for seq, payload in zip(ordered, payloads, strict=True):
                if payload is not None:
                    self._remember(seq, payload)
        found: list[bytes | None] = []
        for seq, offset, size in locations:
            payload = self._cache.get(seq)
            if payload is None:
                found.append(None)
                continue
            self._cache.move_to_end(seq)
            found.append(payload[offset : offset + size])
        return found

    def _remember(self, seq: int, payload: bytes) -> None:
        self._cache[seq] = payload
        self._cache_bytes += len(payload)
        while self._cache_bytes > BODY_CACHE_BYTES and len(self._cache) > 1:
            _, dropped = self._cache.popitem(last=False)
            self._cache_bytes -= len(dropped)

    async def current_bodies(self, message_ids: Sequence[str]) -> dict[str, bytes]:
        """The bodies of messages still in the state, read where they lie now (after a
        compaction moved them); a message gone since is left out."""
        await self.sync()
        present = [self.state.messages[i] for i in message_ids if i in self.state.messages]
        bodies = await self.bodies([m.location for m in present])
        return {m.id: body for m, body in zip(present, bodies, strict=True) if body is not None}

    # -- compaction --------------------------------------------------------------------------

    async def _compact(self) -> None:
        generation = self._generation
        try:
            await self._rehome_oldest()
            if generation != self._generation:
                return  # read again meanwhile: the snapshot would be of another reading
            # the state at `base`, encoded a slice at a time while the next records are applied
            # (the freeze keeps them out of it)
            base = self.applied
            state = self.state
            frozen = state.freeze((base + 1) << ORDER_SHIFT)
            try:
                encoded = await snapshots.encode(frozen)
            finally:
                state.thaw()
            if generation != self._generation:
                return
            data = encoded.data
            keep = int(min(encoded.first_record, base + 1))
            snapshot = new_token()
            count = -(-len(data) // SNAPSHOT_PART_BYTES)
            for index in range(count):
                part = data[index * SNAPSHOT_PART_BYTES : (index + 1) * SNAPSHOT_PART_BYTES]
                header = {"op": "snap", "base": base, "id": snapshot, "part": index, "parts": count}
                await self.js.publish(
                    self.log, "snap", records.encode(header, part), f"snap-{snapshot}-{index}"
                )
            # the latest settings must outlive the purge: copy them above `keep` if they are below
            last = await self.js.last_on(self.log, "meta")
            if last is not None and last[0] < keep:
                with contextlib.suppress(WrongLastSequence):  # a newer one is above already
                    await self.js.publish(
                        self.log, "meta", last[1], f"meta-{snapshot}", expected_last_subject_seq=last[0]
                    )
            if keep > 1:
                await self.js.purge_below(self.log, keep)
            log.info(
                "queue %s: log compacted below record %d (snapshot at %d, %d bytes)",
                self.log,
                keep,
                base,
                len(data),
            )
        except Exception as exc:
            log.warning("queue %s: compacting the log failed: %r", self.log, exc)
        finally:
            self._compacting = False

    async def _rehome_oldest(self) -> None:
        """Write the bodies of the oldest records' live messages again, up to REHOME_MAX_BYTES,
        so that the purge can go past those records."""
        by_record: dict[int, list[str]] = {}
        sizes: dict[int, int] = {}
        # a slice at a time (records are applied meanwhile: current_bodies reads where each
        # message lies then, and leaves out those gone)
        messages = list(self.state.messages.values())
        for start in range(0, len(messages), snapshots.SLICE):
            for message in messages[start : start + snapshots.SLICE]:
                by_record.setdefault(message.record, []).append(message.id)
                sizes[message.record] = sizes.get(message.record, 0) + message.size
            await asyncio.sleep(0)
        del messages
        chosen: list[str] = []
        total = 0
        for seq in sorted(by_record):
            if total + sizes[seq] > REHOME_MAX_BYTES:
                break
            chosen.extend(by_record[seq])
            total += sizes[seq]
        if not chosen:
            return
        bodies = await self.current_bodies(chosen)
        limit = self.js.max_payload - 16 * 1024
        batch: list[tuple[str, bytes]] = []
        size = 0
        last = 0
        for message_id, body in bodies.items():
            if batch and size + len(body) + 64 > limit:
                last = await self._write_rehome(batch)
                batch, size = [], 0
            batch.append((message_id, body))
            size += len(body) + 64
        if batch:
            last = await self._write_rehome(batch)
        await self.wait_applied(last)

    async def _write_rehome(self, bodies: list[tuple[str, bytes]]) -> int:
        return await self.js.publish(self.log, "log", records.encode_rehome(bodies), f"rehome-{new_token()}")


async def wait_any(
    views: Sequence[QueueView], timeout: float, clock: Callable[[], float] = time.monotonic
) -> None:
    """`QueueView.wait` over several logs (a partitioned queue's): return when a message of any
    may be deliverable, or after `timeout` seconds."""
    if len(views) == 1:
        await views[0].wait(timeout, clock)
        return
    deadline = clock() + timeout
    while True:
        now = max(view.now() for view in views)
        dues = [view.due() for view in views]
        soonest = min((due for due, _ in dues if due is not None), default=None)
        if soonest is not None and soonest <= now:
            return
        remaining = deadline - clock()
        if remaining <= 0:
            return
        if soonest is not None:
            remaining = min(remaining, soonest - now)
        events = [event for _, event in dues]
        waiters = [asyncio.ensure_future(event.wait()) for event in events]
        try:
            await asyncio.wait(waiters, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
            await asyncio.gather(*waiters, return_exceptions=True)  # none left pending
        raise_if_cancelled()
        if any(event.is_set() for event in events):
            return
