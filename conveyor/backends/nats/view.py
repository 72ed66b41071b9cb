"""A queue's state in this process, kept current by reading the queue's log as it grows.

A view reads the stream from its first record (or its latest snapshot) and applies every record,
in order, at the server's timestamp of that record; then it applies each new record as the
server pushes it. A command (lease, settle, ...) is written to the log and its outcome is what
this view computes when it applies that record, which every other process computes the same.

Records that vanish under a reader (a compaction purged them before it got there) make it read
again from the snapshot; a stream deleted and made again under the same name is noticed by its
creation time and read again too.

Compaction: once the log holds COMPACT_MIN_BYTES more than twice what the state would take, the
view writes the state as a snapshot (in parts of SNAPSHOT_PART_BYTES) and purges the records
before it. Several processes may do this at once; a reader uses the snapshot that ends where
the log begins.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

from nats.aio.msg import Msg

from conveyor.backends.base import make_lease_id, new_token
from conveyor.backends.nats import records
from conveyor.backends.nats.jetstream import JetStream, WrongLastSequence
from conveyor.backends.nats.records import Record
from conveyor.backends.nats.state import ORDER_SHIFT, QueueState
from conveyor.errors import BackendUnavailable
from conveyor.types import DeadLetterInfo, LeasedMessage

log = logging.getLogger("conveyor.nats")

#: How long a command waits for this process to see its record applied, then reports its
#: outcome as unknown (BackendUnavailable): the record stands, like any write whose reply is lost.
APPLY_TIMEOUT_SECONDS = 30.0
#: A log is compacted when it holds this much more than twice the size of the state.
COMPACT_MIN_BYTES = 8 * 1024 * 1024
#: A snapshot is written in parts of this many bytes (under the server's 1 MB message limit).
SNAPSHOT_PART_BYTES = 512 * 1024


def record_position(reply: str) -> tuple[str, int, float]:
    """The consumer that delivered a record, its stream sequence and the server's timestamp
    (seconds), from the reply subject JetStream delivers it with: `$JS.ACK.<stream>.<consumer>.
    <delivered>.<stream seq>.<consumer seq>.<timestamp ns>.<pending>` (servers >= 2.10 may add a
    domain, an account hash and a token: `$JS.ACK.<domain>.<hash>.<stream>...<pending>.<token>`)."""
    tokens = reply.split(".")
    offset = 2 if len(tokens) >= 12 else 0
    return tokens[3 + offset], int(tokens[5 + offset]), int(tokens[7 + offset]) / 1_000_000_000


class QueueView:
    def __init__(self, js: JetStream, queue: str) -> None:
        self.js = js
        self.queue = queue
        self.state = QueueState(queue)
        self.applied = 0  # stream sequence of the last record applied
        self.created: str | None = None
        self._generation = 0
        self._subscription: Any = None
        self._first_seen: int | None = None
        self._last_seen = 0
        self._consumer: str | None = None  # the consumer delivering the records
        self._held: list[Msg] | None = None  # records held while the stream's identity is checked
        # records held while looking for the snapshot that ends where the log begins
        self._loading: list[tuple[int, float, int, Record]] | None = None
        self._parts: dict[str, dict[int, bytes]] = {}
        self._results: dict[str, asyncio.Future[Any]] = {}
        self._progress: list[tuple[int, int, asyncio.Future[None]]] = []
        self._progress_ids = itertools.count()
        self._wake = asyncio.Event()
        self._log_bytes = 0
        self._compact_factor = random.uniform(1.0, 1.5)  # spreads compactions of several readers
        self._tasks: set[asyncio.Task[None]] = set()
        self._compacting = False

    # -- reading the log ---------------------------------------------------------------------

    async def start(self) -> None:
        stream = await self.js.require_stream(self.queue)
        self.created = stream.created
        self._subscription = await self._follow(self._generation)
        await self.wait_applied(stream.last_seq)

    async def close(self) -> None:
        self._generation += 1
        for task in self._tasks:
            task.cancel()
        await self._unsubscribe()
        for future in self._results.values():
            if not future.done():
                future.cancel()
        if self._consumer is not None:  # at once: a stream with no consumer is one nobody reads
            with contextlib.suppress(Exception):
                await self.js.delete_consumer(self.queue, self._consumer)

    async def _follow(self, generation: int) -> Any:
        async def on_record(msg: Msg) -> None:
            if generation != self._generation:
                return
            try:
                self._receive(msg)
            except Exception:  # a bug here must not pass in silence: read everything again
                log.exception(
                    "queue %s: applying record %s failed; reading the log again", self.queue, msg.reply
                )
                self._restart()

        return await self.js.follow(self.queue, on_record)

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
        self._log_bytes = 0
        self._spawn(self._resubscribe(self._generation))

    async def _resubscribe(self, generation: int) -> None:
        """Follow the log again, trying until it works or this reading is superseded."""
        await self._unsubscribe()
        pause = 0.0
        while generation == self._generation:
            await asyncio.sleep(pause)
            try:
                subscription = await self._follow(generation)
            except Exception as exc:  # the stream may be gone or leaderless for a while
                log.warning("reading the log of queue %s again failed: %r", self.queue, exc)
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
            stream = await self.js.stream_state(self.queue)
        except Exception as exc:
            log.warning("queue %s: checking its stream failed (%r); reading its log again", self.queue, exc)
            stream = None
        if generation != self._generation:
            return
        held, self._held = self._held or [], None
        if stream is None or stream.created != self.created:
            if stream is not None:
                self.created = stream.created
            self._restart()
            return
        try:
            for msg in held:
                _, seq, timestamp = record_position(msg.reply)
                self._take(seq, timestamp, msg.data)
        except Exception:  # as in on_record: never in silence
            log.exception("queue %s: applying a record failed; reading the log again", self.queue)
            self._restart()

    def _take(self, seq: int, timestamp: float, data: bytes) -> None:
        if self._first_seen is None:
            self._first_seen = seq
            if seq != 1:  # compacted: the state before `seq` is in a snapshot further on
                self._loading = []
        elif seq != self._last_seen + 1:
            log.info("records of queue %s were compacted under its reader; reading again", self.queue)
            self._restart()
            return
        self._last_seen = seq
        try:
            record = records.decode(data)
        except ValueError:
            log.error("queue %s: record %d is not a conveyor record; skipped", self.queue, seq)
            record = Record("unknown", {}, memoryview(b""))
        if self._loading is not None:
            self._load(seq, timestamp, len(data), record)
        else:
            self._apply(seq, timestamp, len(data), record)

    def _load(self, seq: int, timestamp: float, size: int, record: Record) -> None:
        assert self._loading is not None and self._first_seen is not None
        self._loading.append((seq, timestamp, size, record))
        header = record.header
        if record.op != "snap" or header["base"] != self._first_seen - 1:
            return
        parts = self._parts.setdefault(str(header["id"]), {})
        parts[int(header["part"])] = bytes(record.blob)
        if len(parts) < int(header["parts"]):
            return
        self.state = records.decode_state(self.queue, b"".join(parts[i] for i in range(len(parts))))
        self.applied = int(header["base"])
        held, self._loading, self._parts = self._loading, None, {}
        for item in held:
            self._apply(*item)

    # -- applying records --------------------------------------------------------------------

    def _apply(self, seq: int, timestamp: float, size: int, record: Record) -> None:
        state = self.state
        now = state.advance(timestamp)
        header = record.header
        op = record.op
        result: Any = None
        if op == "send":
            if state.send(records.decode_arrivals(record), now, seq << ORDER_SHIFT):
                self.wake()
            if "x" in header:
                state.fan_out(records.decode_fan_out(record, now))
        elif op == "lease":
            token = str(header["tok"])
            leased = state.lease(int(header["n"]), float(header["vt"]), token, now)
            if token in self._results:
                queue = self.queue
                result = [
                    LeasedMessage(
                        m.id,
                        queue,
                        m.body,
                        m.content_type,
                        m.timestamp,
                        m.attempts,
                        make_lease_id(m.id, token),
                        m.dead_letter,
                    )
                    for m in leased
                ]
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
        elif op == "move":
            result = state.move_out(str(header["to"]), header["n"], str(header["tok"]), now)
        elif op == "moved":
            state.moved(header["ids"])
        elif op == "sweep":
            result = state.sweep(now)
        elif op == "meta":
            if state.set_meta(*records.decode_meta(record)):
                self.wake()
        elif op == "snap":
            if int(header["part"]) == int(header["parts"]) - 1:
                self._log_bytes = 0  # someone compacted the log up to about here
        else:
            log.error("queue %s: record %d has an unknown kind %r; skipped", self.queue, seq, op)
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
        if (
            not self._compacting
            and self._log_bytes > COMPACT_MIN_BYTES * self._compact_factor
            and self._log_bytes > 2 * state.bytes * self._compact_factor
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
        if self.applied >= seq:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._progress, (seq, next(self._progress_ids), future))
        try:
            await asyncio.wait_for(future, APPLY_TIMEOUT_SECONDS)
        except TimeoutError:
            raise BackendUnavailable(
                f"queue {self.queue}: its log did not reach record {seq} within {APPLY_TIMEOUT_SECONDS:g} s"
            ) from None

    async def sync(self) -> None:
        """Apply every record stored before this call (QueueNotFound if the queue is gone)."""
        stream = await self.js.require_stream(self.queue)
        if stream.created != self.created:
            self.created = stream.created
            self._restart()
        await self.wait_applied(stream.last_seq)

    async def command(self, header: dict[str, Any]) -> Any:
        """Write a command record and return its outcome as this view applies it."""
        token = str(header["tok"])
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._results[token] = future
        try:
            seq = await self.js.publish(self.queue, "log", records.encode(header), token)
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
            while True:
                try:
                    await sweep()
                except Exception as exc:  # the next one tries again
                    log.warning("queue %s: sweeping failed: %r", self.queue, exc)
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
            if event.is_set():
                return

    # -- compaction --------------------------------------------------------------------------

    async def _compact(self) -> None:
        try:
            base = self.applied
            data = records.encode_state(self.state)
            snapshot = new_token()
            parts = [data[i : i + SNAPSHOT_PART_BYTES] for i in range(0, len(data), SNAPSHOT_PART_BYTES)]
            for index, part in enumerate(parts):
                header = {"op": "snap", "base": base, "id": snapshot, "part": index, "parts": len(parts)}
                await self.js.publish(
                    self.queue, "snap", records.encode(header, part), f"snap-{snapshot}-{index}"
                )
            # the latest settings must outlive the purge: copy them above `base` if they are below
            last = await self.js.last_on(self.queue, "meta")
            if last is not None and last[0] <= base:
                with contextlib.suppress(WrongLastSequence):  # a newer one is above `base` already
                    await self.js.publish(
                        self.queue, "meta", last[1], f"meta-{snapshot}", expected_last_subject_seq=last[0]
                    )
            await self.js.purge_below(self.queue, base + 1)
            log.info(
                "queue %s: log compacted below record %d (%d bytes of state)", self.queue, base, len(data)
            )
        except Exception as exc:
            log.warning("queue %s: compacting the log failed: %r", self.queue, exc)
        finally:
            self._compacting = False
