"""nats:// — NATS JetStream >= 2.9 through nats-py: replicated, clustered queues.

URL: `nats://[user:password@]host:4222[,host2:4222,...]?prefix=conveyor&replicas=1&duplicate_window=120`
(`&record_format=1` during a rolling upgrade: docs/nats.md, "Upgrades").

Each queue is one JetStream stream holding the queue's log: every send and every outcome is a
record, and a queue's state (what is visible, leased, delayed; attempts; dead-letter info) is
what applying its records in order gives (`state.py`). Every process that uses a queue keeps
that state by reading the log (`view.py`), so a lease, a retry or a dead letter means the same
everywhere, at the server's time, with the semantics of every other engine. docs/nats.md says
why the engine does not lean on JetStream's own consumers, and what each choice costs.

A queue of N > 1 partitions is N such logs, one stream each (partitions.py splits and joins them):
a message is written to the log of the partition it is placed in, a lease token names its
partition, and every partition's log holds a copy of the queue's settings.

Sends are one record (a batch stays whole) carrying a Nats-Msg-Id made of its first message id,
so a send retried after a lost reply is stored once within the stream's duplicate window.
Messages bound for another queue (dead letters, replays, a send naming several queues: topic
fan-out) wait in the outbox of the queue whose record committed them, part of its state, until
their copy is stored (with a Nats-Msg-Id naming the move): a crash in between leaves them in the
outbox, and the next sweep finishes the move.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from conveyor.backends.base import Backend, is_ahead, new_token
from conveyor.backends.nats import partitions, records
from conveyor.backends.nats.jetstream import (
    JetStream,
    StreamState,
    WrongLastSequence,
    created_ns,
    log_name,
    parse_nats_url,
    split_log,
)
from conveyor.backends.nats.records import Outgoing
from conveyor.backends.nats.state import Location, Move, Settled
from conveyor.backends.nats.view import QueueView, wait_any
from conveyor.backends.partitioning import place
from conveyor.errors import (
    BackendUnavailable,
    MessageLeased,
    QueueAlreadyExists,
    QueueFull,
    QueueNotFound,
    StorageUnusable,
)
from conveyor.limits import SWEEP_INTERVAL_SECONDS
from conveyor.types import (
    SYSTEM_CLOCK,
    Clock,
    Lease,
    LeasedMessage,
    Outcomes,
    OutgoingMessage,
    QueueInfo,
    QueueSettings,
    QueueStats,
    StoredMessage,
    Subscription,
    WorkerInfo,
)

log = logging.getLogger("conveyor.nats")

#: a move with its copies' bodies in hand: (move id, destination queue, messages)
Copies = tuple[str, str, Sequence[Outgoing]]

#: A send record stays this far under the server's message size limit (max_payload, 1 MB by
#: default) to leave room for its header.
RECORD_MARGIN_BYTES = 16 * 1024
#: A move (dead letters, replay) whose copy is not stored this long after it began was left by a
#: process that stopped; the next sweep finishes it.
MOVE_GRACE_SECONDS = 10.0
#: A process that does not read a queue learns of a backlog limit set elsewhere within this long
#: (it keeps the queue's settings that long instead of asking the server on every send).
SETTINGS_CACHE_SECONDS = 1.0
#: How often a compare-and-set of settings is tried against concurrent writers.
CAS_ATTEMPTS = 20
#: A queue nobody reads that changed since a sweep last read it is read again by a sweep at most
#: this often (sooner when its oldest message passes retention as of that reading).
UNREAD_QUEUE_RECHECK_SECONDS = 600.0


@dataclass(frozen=True, slots=True)
class _Looked:
    """What a sweep saw of a queue nobody reads: its stream then, and when a sweep would next
    have work there had nothing changed."""

    created: str
    last_seq: int
    read_at: float
    due: float


class NatsBackend(Backend):
    engine = "nats"
    uses_local_clock = False

    def __init__(self, url: str, *, clock: Clock = SYSTEM_CLOCK) -> None:
        super().__init__(url, clock=clock)
        self.options = parse_nats_url(url)
        self.js = JetStream(self.options)
        self._views: dict[str, asyncio.Future[QueueView]] = {}
        self._known: set[str] = set()  # queues seen to exist (a stale entry costs one retried write)
        self._looked: dict[str, _Looked] = {}  # queues nobody reads, as this process's sweep saw them
        self._settings: dict[str, tuple[float, QueueSettings]] = {}  # (read at, settings) by queue
        self._turns: dict[str, int] = {}  # by partitioned queue: where its next lease starts

    def sibling(self) -> NatsBackend:
        return NatsBackend(self.url, clock=self.clock)

    # -- lifecycle ---------------------------------------------------------------------------

    async def connect(self) -> None:
        await self.js.connect()

    async def close(self) -> None:
        views, self._views = self._views, {}
        for future in views.values():
            await _close_view(future)
        await self.js.close()

    # -- views -------------------------------------------------------------------------------
    # A view reads one log: a queue's, or one partition's (`log` names it, jetstream.log_name).

    async def _view(self, log: str) -> QueueView:
        """This process's view of `log`, read up to now on first use (QueueNotFound if none)."""
        future = self._views.get(log)
        if future is None:
            future = self._views[log] = asyncio.ensure_future(self._start_view(log))
        try:
            return await asyncio.shield(future)
        except BaseException:
            if future.done() and self._views.get(log) is future:
                del self._views[log]
            raise

    async def _start_view(self, log: str, *, keep_swept: bool = True) -> QueueView:
        """A view read up to now; `keep_swept`: a view this process holds sweeps its log every
        SWEEP_INTERVAL_SECONDS, so a queue someone reads is swept by its readers."""
        view = QueueView(self.js, log)
        try:
            try:
                await view.start()
            except QueueNotFound:
                if not await self._heal_partition(log):
                    raise
                await view.start()
            except StorageUnusable:
                if view.failed is None:
                    raise
                # a newer conveyor's record: kept, so that the log is read (and the reason
                # logged) once, and every use of the queue raises StorageUnusable
                return view
            if split_log(log)[1]:
                await self._copy_meta(view)
        except BaseException:
            await view.close()
            raise
        if keep_swept:
            view.sweep_every(SWEEP_INTERVAL_SECONDS, lambda: self._sweep_held(log, view))
        return view

    async def _sweep_held(self, log: str, view: QueueView) -> None:
        try:
            await self._sweep_view(log, view)
        except QueueNotFound:  # deleted: stop reading it (this ends the sweeping loop too)
            await self._forget(split_log(log)[0])

    async def _forget(self, queue: str) -> None:
        self._known.discard(queue)
        self._settings.pop(queue, None)
        for log in [log for log in self._views if split_log(log)[0] == queue]:
            future = self._views.pop(log, None)
            if future is not None:
                await _close_view(future)

    async def _command(self, log: str, header: dict[str, Any]) -> Any:
        view = await self._view(log)
        try:
            return await view.command(header)
        except QueueNotFound:
            await self._forget(split_log(log)[0])
            raise

    async def _synced(self, log: str) -> QueueView:
        view = await self._view(log)
        try:
            await view.sync()
        except QueueNotFound:
            await self._forget(split_log(log)[0])
            raise
        return view

    # -- partitions --------------------------------------------------------------------------
    # A queue of N > 1 partitions is N logs; partition 0's is the queue's own stream, which holds
    # its settings (every partition's log holds a copy, applied in that log's order: a pause
    # stops every partition's leases deterministically). docs/nats.md, "Partitions".

    async def _partitions(self, queue: str) -> int:
        """The queue's partition count (fixed at creation); QueueNotFound if there is no queue."""
        return (await self._queue_settings(queue)).partitions

    async def _all_views(self, queue: str) -> list[QueueView]:
        """A view of each of the queue's logs, partition by partition."""
        first = await self._view(queue)
        count = first.state.settings.partitions
        if count == 1:
            return [first]
        rest = await asyncio.gather(*(self._view(log_name(queue, k)) for k in range(1, count)))
        return [first, *rest]

    async def _all_synced(self, queue: str) -> list[QueueView]:
        views = await self._all_views(queue)
        if len(views) == 1:
            return [await self._synced(queue)]
        return list(await asyncio.gather(*(self._synced(view.log) for view in views)))

    async def _copy_meta(self, view: QueueView) -> None:
        """Bring a partition's log up to its queue's settings if it lags (its queue's settings
        record was written, and the process copying it to the partitions stopped first)."""
        seq, info = await self._meta(view.queue)
        if seq > view.state.meta_seq:
            await view.wait_applied(await self._write_meta_copy(view.log, info, seq))

    async def _write_meta_copy(self, log: str, info: QueueInfo, seq: int) -> int:
        payload = records.encode_meta(info.settings, info.paused, info.created_at, copies=seq)
        return await self.js.publish(log, "meta", payload, f"meta-{seq}-{info.created_at}-{log}")

    async def _heal_partition(self, log: str) -> bool:
        """Make a partition's stream the queue's settings say it has and that is missing (a
        process creating the queue stopped before making it); False when the queue has no such
        partition (or no longer exists)."""
        queue, partition = split_log(log)
        if not partition:
            return False
        try:
            seq, info = await self._meta(queue)
        except QueueNotFound:
            return False
        if seq == 0 or partition >= info.settings.partitions:
            return False
        await self.js.create_stream(log)
        await self._write_meta_copy(log, info, seq)
        return True

    async def _create_partitions(self, queue: str, info: QueueInfo, seq: int) -> None:
        """Partition streams 1 and up of a queue just created, each with its settings copy. A
        stream older than the queue's own is left from a queue of the same name deleted half
        way: made again empty."""
        base = await self.js.require_stream(queue)

        async def make(log: str) -> None:
            made = await self.js.create_stream(log)  # an existing stream answers as it is
            if created_ns(made.created) < created_ns(base.created):
                await self.js.delete_stream(log)
                await self.js.create_stream(log)
            await self._write_meta_copy(log, info, seq)

        await asyncio.gather(*(make(log_name(queue, k)) for k in range(1, info.settings.partitions)))

    # -- queues ------------------------------------------------------------------------------

    async def create_queue(self, name: str, settings: QueueSettings, *, exist_ok: bool) -> QueueInfo:
        self._settings.pop(name, None)
        await self.js.create_stream(name)
        created = time.time()
        try:
            seq = await self.js.publish(
                name,
                "meta",
                records.encode_meta(settings, False, created),
                f"create-{new_token()}",
                expected_last_subject_seq=0,
            )
        except WrongLastSequence:
            if not exist_ok:
                raise QueueAlreadyExists(name) from None
            info = await self.get_queue(name)
            if info is None:  # deleted this instant: make it again
                return await self.create_queue(name, settings, exist_ok=exist_ok)
            self._known.add(name)
            return info
        info = QueueInfo(name=name, settings=settings, paused=False, created_at=created)
        if settings.partitions > 1:
            await self._create_partitions(name, info, seq)
        self._known.add(name)
        return info

    async def _meta(self, name: str) -> tuple[int, QueueInfo]:
        """The sequence of the queue's settings record (0 if none yet) and its QueueInfo."""
        last = await self.js.last_on(name, "meta")
        if last is None:  # a stream whose creation was interrupted: default settings
            return 0, QueueInfo(name, QueueSettings(), False, 0.0)
        settings, paused, created = records.decode_meta(records.decode(last[1]))
        return last[0], QueueInfo(name, settings, paused, created)

    async def get_queue(self, name: str) -> QueueInfo | None:
        try:
            return (await self._meta(name))[1]
        except QueueNotFound:
            return None

    async def _change_meta(self, name: str, settings: QueueSettings | None, paused: bool | None) -> QueueInfo:
        for _ in range(CAS_ATTEMPTS):
            seq, info = await self._meta(name)
            new = QueueInfo(
                name,
                info.settings if settings is None else settings,
                info.paused if paused is None else paused,
                info.created_at,
            )
            payload = records.encode_meta(new.settings, new.paused, new.created_at)
            try:
                written = await self.js.publish(
                    name, "meta", payload, f"meta-{new_token()}", expected_last_subject_seq=seq
                )
            except WrongLastSequence:
                continue
            self._settings.pop(name, None)
            # every partition's log gets its copy (a process stopping half way: the next reader
            # of a partition that lags copies it, see _copy_meta)
            logs = [log_name(name, k) for k in range(1, new.settings.partitions)]
            copies = await asyncio.gather(*(self._write_meta_copy(log, new, written) for log in logs))
            for log, at in zip([name, *logs], [written, *copies], strict=True):
                future = self._views.get(log)
                if future is not None and _ready(future):  # this process's next send sees the change
                    await future.result().wait_applied(at)
            return new
        raise BackendUnavailable(f"queue {name}: its settings kept changing under {CAS_ATTEMPTS} attempts")

    async def update_queue(self, name: str, settings: QueueSettings) -> QueueInfo:
        return await self._change_meta(name, settings, None)

    async def set_paused(self, name: str, paused: bool) -> None:
        await self._change_meta(name, None, paused)

    async def delete_queue(self, name: str) -> bool:
        await self._forget(name)
        # the partitions' streams first: one left behind by a process stopping half way stays
        # part of a queue that still exists, which the next delete removes
        partitions = await self.js.partition_logs(name)
        await asyncio.gather(*(self.js.delete_stream(log) for log in partitions))
        existed = await self.js.delete_stream(name)
        await self._change_subscriptions(lambda subscriptions: _without_queue(subscriptions, name))
        return existed

    async def list_queues(self) -> list[QueueInfo]:
        names = await self.js.queue_names()
        infos = await asyncio.gather(*(self.get_queue(name) for name in names))
        return [info for info in infos if info is not None]

    # -- topic subscriptions ------------------------------------------------------------------

    async def _subscriptions(self) -> tuple[int, dict[str, Any]]:
        seq, document = await self.js.read_topics()
        return seq, {} if document is None else json.loads(document)

    async def _change_subscriptions(self, change: Any) -> Any:
        """Apply `change` (document -> result; it edits the document in place) by compare-and-set."""
        for _ in range(CAS_ATTEMPTS):
            seq, document = await self._subscriptions()
            before = json.dumps(document, sort_keys=True)
            result = change(document)
            if json.dumps(document, sort_keys=True) == before:
                return result
            try:
                await self.js.write_topics(json.dumps(document).encode(), seq)
            except WrongLastSequence:
                continue
            return result
        raise BackendUnavailable(f"topic subscriptions kept changing under {CAS_ATTEMPTS} attempts")

    async def add_subscription(self, topic: str, queue: str, types: Sequence[str] | None) -> Subscription:
        wanted = None if types is None else list(types)

        def add(document: dict[str, Any]) -> Subscription:
            key = f"{topic}\n{queue}"
            created = document.get(key, {}).get("created", time.time())
            document[key] = {"types": wanted, "created": created}
            return _subscription(key, document[key])

        result: Subscription = await self._change_subscriptions(add)
        return result

    async def remove_subscription(self, topic: str, queue: str) -> bool:
        result: bool = await self._change_subscriptions(
            lambda document: document.pop(f"{topic}\n{queue}", None) is not None
        )
        return result

    async def list_subscriptions(self, topic: str | None = None) -> list[Subscription]:
        _, document = await self._subscriptions()
        subscriptions = [_subscription(key, value) for key, value in document.items()]
        return sorted(
            (s for s in subscriptions if topic is None or s.topic == topic), key=lambda s: (s.topic, s.queue)
        )

    # -- worker heartbeats: one document, replaced by compare-and-set as the topics one --------

    async def _change_workers(self, change: Callable[[dict[str, Any]], None]) -> None:
        for _ in range(CAS_ATTEMPTS):
            seq, data = await self.js.read_workers()
            document: dict[str, Any] = {} if data is None else json.loads(data)
            change(document)
            try:
                await self.js.write_workers(json.dumps(document).encode(), seq)
            except WrongLastSequence:
                continue
            return
        raise BackendUnavailable(f"worker heartbeats kept changing under {CAS_ATTEMPTS} attempts")

    async def record_worker(self, worker: WorkerInfo, ttl: float) -> None:
        def record(document: dict[str, Any]) -> None:
            for key in [key for key, seen in document.items() if seen["seen_at"] < worker.seen_at - ttl]:
                del document[key]
            document[worker.id] = worker.to_dict()

        await self._change_workers(record)

    async def list_workers(self, since: float) -> list[WorkerInfo]:
        _, data = await self.js.read_workers()
        document: dict[str, Any] = {} if data is None else json.loads(data)
        workers = [WorkerInfo.from_dict(value) for value in document.values()]
        return sorted((worker for worker in workers if worker.seen_at >= since), key=lambda worker: worker.id)

    async def forget_worker(self, worker_id: str) -> None:
        _, data = await self.js.read_workers()
        if data is not None and worker_id in json.loads(data):
            await self._change_workers(lambda document: document.pop(worker_id, None) and None)

    # -- sending -----------------------------------------------------------------------------

    async def send_many(self, messages: Sequence[OutgoingMessage]) -> list[str]:
        if len(messages) == 1 and messages[0].dedup_id is None:  # a lone send: the common case
            message = messages[0]
            await self._append(message.queue, [_outgoing(message)], "send")
            return [message.id]
        by_queue: dict[str, list[Outgoing]] = {}
        for message in messages:
            by_queue.setdefault(message.queue, []).append(_outgoing(message))
        if len(by_queue) == 1:
            [(name, arrivals)] = by_queue.items()
            lasts = await self._append(name, arrivals, "send")
            if all(m.dedup_id is None for m in messages):
                return [m.id for m in messages]
            return await self._stored_as(name, messages, lasts)
        # a missing queue must fail the whole write before any of it
        unknown = [name for name in by_queue if name not in self._known]
        states = await asyncio.gather(*(self.js.stream_state(name) for name in unknown))
        for name, state in zip(unknown, states, strict=True):
            if state is None:
                raise QueueNotFound(name)
            self._known.add(name)
        for name, arrivals in by_queue.items():  # checked just before the write (docs/nats.md)
            settings = await self._queue_settings(name)
            if settings.partitions > 1:
                by_queue[name] = partitions.stamped(arrivals)
            if settings.bounded:
                await self._check_room(name, by_queue[name])
        await self._fan_out(by_queue)
        # a write naming several queues is a topic's fan-out: its copies carry no dedup ids
        return [m.id for m in messages]

    async def _stored_as(
        self, queue: str, messages: Sequence[OutgoingMessage], lasts: dict[int, int]
    ) -> list[str]:
        """The ids messages with dedup ids are stored under, as the log of the partition each
        went to decided once every process applies it: read up to the send's last record there."""
        count = await self._partitions(queue)
        placed = {m.id: place(m.group, m.dedup_id, m.id, count) for m in messages if m.dedup_id is not None}
        views = {k: await self._view(log_name(queue, k)) for k in set(placed.values())}
        for k, view in views.items():
            await view.wait_applied(lasts[k])
        stored = []
        for m in messages:
            if m.dedup_id is None:
                stored.append(m.id)
                continue
            state = views[placed[m.id]].state
            stored.append(state.stored_as(m.group, m.dedup_id, m.id, state.now))
        return stored

    async def _fan_out(self, by_queue: dict[str, list[Outgoing]]) -> None:
        """One write to the first queue commits the messages of all: the others' copies wait in
        its outbox (part of the record) until they are stored in their queues, at once here, or
        by the next sweep if this process stops first. A partitioned first queue is written in
        the partition of its first message; its messages placed in other partitions are copies
        too (stored where they belong)."""
        home = next(iter(by_queue))
        count = await self._partitions(home)
        home_partition = partitions.partition_of(by_queue[home][0], count)
        home_log = log_name(home, home_partition)
        limit = self.js.max_payload - RECORD_MARGIN_BYTES
        packed: list[tuple[list[Outgoing], dict[str, list[Outgoing]]]] = [([], {})]
        size = 0
        for name, messages in by_queue.items():
            for message in messages:
                grow = records.send_size(message)
                own, copies = packed[-1]
                if (own or copies) and size + grow > limit:  # more than one record can hold
                    packed.append(([], {}))
                    own, copies = packed[-1]
                    size = 0
                size += grow
                if name == home and partitions.partition_of(message, count) == home_partition:
                    own.append(message)
                else:
                    copies.setdefault(name, []).append(message)
        moves: list[Copies] = []
        for own, copies in packed:
            first = own[0] if own else next(iter(copies.values()))[0]
            msg_id = f"fan-{first.id}-{len(own) + sum(len(c) for c in copies.values())}"
            record_moves = [(f"{msg_id}~{name}", name, messages) for name, messages in copies.items()]
            await self.js.publish(home_log, "log", records.encode_send(own, record_moves), msg_id)
            moves.extend(record_moves)
        await self._finish_moves(home_log, moves)

    async def _append(self, queue: str, messages: Sequence[Outgoing], msg_id_prefix: str) -> dict[int, int]:
        """Store `messages` in `queue`: each in its partition's log, one record per partition if
        they fit in one (else several, in order), the partitions written at once. Returns the
        stream sequence of the last record written to each partition."""
        try:
            settings = await self._queue_settings(queue)
            bounded = msg_id_prefix == "send" and settings.bounded
            count = settings.partitions
            if count == 1:
                lasts = {0: await self._append_log(queue, messages, msg_id_prefix, bounded)}
            else:
                messages = partitions.stamped(messages)
                if bounded:  # the queue's limits hold for all its partitions together
                    await self._check_room(queue, messages)
                parts = partitions.split(messages, count)
                written = await asyncio.gather(
                    *(
                        self._append_log(log_name(queue, k), chunk, msg_id_prefix, False)
                        for k, chunk in parts.items()
                    )
                )
                lasts = dict(zip(parts, written, strict=True))
        except QueueNotFound:
            self._known.discard(queue)
            self._settings.pop(queue, None)  # made again, maybe with another partition count
            raise
        self._known.add(queue)
        return lasts

    async def _append_log(
        self, log: str, messages: Sequence[Outgoing], msg_id_prefix: str, bounded: bool
    ) -> int:
        """Store `messages` in one log, one record if they fit in one (else several, in order);
        returns the stream sequence of the last. `bounded`: a queue of one partition with
        backlog limits, whose log checks each record."""
        if len(messages) == 1 and not bounded:  # one record however big (as below), no sizing
            return await self._publish_send(log, messages, f"{msg_id_prefix}-{messages[0].id}-1")
        limit = self.js.max_payload - RECORD_MARGIN_BYTES
        chunks: list[list[Outgoing]] = [[]]
        size = 0
        for message in messages:
            grow = records.send_size(message)
            if chunks[-1] and size + grow > limit:
                chunks.append([])
                size = 0
            chunks[-1].append(message)
            size += grow
        last = 0
        if bounded and len(chunks) > 1:
            await self._check_room(log, messages)  # several records: each is checked too
        for chunk in chunks:
            if chunk:
                msg_id = f"{msg_id_prefix}-{chunk[0].id}-{len(chunk)}"
                if bounded:
                    last = await self._append_checked(log, chunk, msg_id)
                else:
                    last = await self._publish_send(log, chunk, msg_id)
        return last

    async def _publish_send(self, log: str, chunk: Sequence[Outgoing], msg_id: str) -> int:
        try:
            return await self.js.publish(log, "log", records.encode_send(chunk), msg_id)
        except QueueNotFound:  # a partition whose stream is missing: made, then written once more
            if not await self._heal_partition(log):
                raise
            return await self.js.publish(log, "log", records.encode_send(chunk), msg_id)

    # -- bounded queues ----------------------------------------------------------------------

    async def _queue_settings(self, queue: str) -> QueueSettings:
        """The queue's settings: this process's view's when it reads the queue, else read from
        the server at most every SETTINGS_CACHE_SECONDS."""
        future = self._views.get(queue)
        if future is not None and _ready(future):
            return future.result().state.settings
        now = time.monotonic()
        cached = self._settings.get(queue)
        if cached is not None and now - cached[0] < SETTINGS_CACHE_SECONDS:
            return cached[1]
        settings = (await self._meta(queue))[1].settings
        self._settings[queue] = (now, settings)
        return settings

    async def _append_checked(self, queue: str, chunk: Sequence[Outgoing], msg_id: str) -> int:
        """One send record into a bounded queue: every reader stores it only if it fits (the
        log orders racing senders), and this process's view says whether it did. Returns a
        stream sequence its view has applied, the record's or later."""
        view = await self._view(queue)
        token = new_token()
        refused = await view.submit(token, records.encode_send(chunk, checked=token), msg_id)
        if refused is not None:
            raise QueueFull(queue, *refused)
        return view.applied

    async def _check_room(self, queue: str, messages: Sequence[Outgoing]) -> None:
        """QueueFull unless `messages` fit the bounded queue as it is now (for what one checked
        record cannot cover: a send of several records, copies into other queues, a queue of
        several partitions, whose limits hold for all its partitions together: summed here,
        before the write, so senders racing may pass them by what they send at that instant)."""
        views = await self._all_synced(queue)
        count = len(views)
        parts = partitions.split(messages, count) if count > 1 else {0: list(messages)}
        held = adding = held_bytes = adding_bytes = 0
        for k, view in enumerate(views):
            state = view.state
            new = state.admitted(parts.get(k, []), state.now)  # a deduplicated message takes no room
            held, held_bytes = held + len(state.messages), held_bytes + state.bytes
            adding, adding_bytes = adding + len(new), adding_bytes + sum(len(m.body) for m in new)
        refused = views[0].state.room_refusal(adding, adding_bytes, held=(held, held_bytes))
        if refused is not None:
            raise QueueFull(queue, *refused)

    # -- shared rate limits (SharedRateLimits) ------------------------------------------------
    # A bucket is the last message on its subject of the rates stream, replaced by compare-and-set;
    # its time is the wall clock of the workers taking from it (keep them in sync, as NTP does).

    async def take_tokens(self, queue: str, wanted: int, rate: float, burst: float) -> tuple[int, float]:
        for _ in range(CAS_ATTEMPTS):
            seq, data = await self.js.read_rate(queue)
            now = time.time()
            tokens, at = (burst, now) if data is None else json.loads(data)
            tokens = min(burst, float(tokens) + max(0.0, now - float(at)) * rate)
            taken = min(wanted, int(tokens))
            if not taken:  # nothing to write: the next take refills from the same point
                return 0, (1 - tokens) / rate
            try:
                await self.js.write_rate(queue, json.dumps([tokens - taken, now]).encode(), seq)
            except WrongLastSequence:
                continue
            return taken, 0.0
        return 0, min(0.05, 1 / rate)  # busy: other workers took meanwhile; ask again soon

    async def give_back_tokens(self, queue: str, count: int, burst: float) -> None:
        for _ in range(CAS_ATTEMPTS):
            seq, data = await self.js.read_rate(queue)
            if data is None:
                return
            tokens, at = json.loads(data)
            try:
                await self.js.write_rate(
                    queue, json.dumps([min(burst, float(tokens) + count), at]).encode(), seq
                )
            except WrongLastSequence:
                continue
            return

    # -- leasing -----------------------------------------------------------------------------

    async def lease_many(
        self, queue: str, limit: int, visibility_timeout: float, *, handed: bool = True
    ) -> list[LeasedMessage]:
        return await self._lease(queue, limit, visibility_timeout, handed, 0)

    async def lease_ahead(
        self, queue: str, limit: int, visibility_timeout: float, *, hand_first: int
    ) -> list[LeasedMessage]:
        """Leased ahead, the first `hand_first` non-suspects handed in the lease record itself
        when it takes that many (state.QueueState.lease): the worker's begin of the batches it
        starts at once is saved. A partitioned queue: the first partition whose lease record
        takes that many hands them (all or none each), and they come first in the list. Under
        `record_format=1` (readers of the base format still about) it hands none: the worker
        begins what it starts."""
        if self.options.record_format < records.HANDING_FORMAT:
            hand_first = 0
        return await self._lease(queue, limit, visibility_timeout, False, hand_first)

    async def _lease(
        self, queue: str, limit: int, visibility_timeout: float, handed: bool, hand: int
    ) -> list[LeasedMessage]:
        if limit <= 0:
            return []
        try:
            views = await self._all_views(queue)
            if not any(view.has_visible() for view in views):  # look again at the latest records
                views = await self._all_synced(queue)
                if not any(view.has_visible() for view in views):
                    return []
            if len(views) == 1:
                return await self._lease_log(views[0], limit, visibility_timeout, handed, hand)
            # partitions in turn, from one further on each time: a batch takes what the first
            # with visible messages has, then the next one's, until full
            turn = self._turns.get(queue, 0)
            self._turns[queue] = turn + 1
            leased: list[LeasedMessage] = []
            handing = False
            for k in partitions.rotation(turn, len(views)):
                if len(leased) >= limit:
                    break
                if views[k].has_visible():
                    wanted = limit - len(leased)
                    got = await self._lease_log(views[k], wanted, visibility_timeout, handed, hand)
                    if hand and any(not is_ahead(m.lease_id) for m in got):
                        hand, handing = 0, True  # this partition handed them all: no other hands
                    leased += got
            if not handing:
                return leased
            # the handed first: the batch the worker starts at once
            ahead = [m for m in leased if is_ahead(m.lease_id)]
            return [m for m in leased if not is_ahead(m.lease_id)] + ahead
        except QueueNotFound:
            return []

    async def _lease_log(
        self, view: QueueView, limit: int, visibility_timeout: float, handed: bool, hand: int = 0
    ) -> list[LeasedMessage]:
        token = partitions.lease_token(split_log(view.log)[1], handed)
        header: dict[str, Any] = {"op": "lease", "tok": token, "n": limit, "vt": visibility_timeout}
        if hand:  # declared: a reader of the base format would take these leases as read ahead
            header["h"], header["v"] = hand, records.HANDING_FORMAT
        leased: list[tuple[LeasedMessage, Location]] = await self._command(view.log, header)
        return await self._with_bodies(view, leased)

    async def _with_bodies(
        self, view: QueueView, leased: list[tuple[LeasedMessage, Location]]
    ) -> list[LeasedMessage]:
        """The leased messages with their bodies read from the log. A body whose record a
        compaction purged meanwhile is read where it lies now; a message gone since (its lease
        expired and someone settled it) is left out, as a lease that expired would be."""
        bodies = await view.bodies([location for _, location in leased])
        messages = [message for message, _ in leased]
        missing = [m.id for m, body in zip(messages, bodies, strict=True) if body is None]
        found = await view.current_bodies(missing) if missing else {}
        result = []
        for message, body in zip(messages, bodies, strict=True):
            if body is None:
                body = found.get(message.id)
                if body is None:
                    log.warning(
                        "queue %s: message %s was settled elsewhere while leased here", view.queue, message.id
                    )
                    continue
            message.body = body
            result.append(message)
        return result

    async def _by_partition(
        self, queue: str, leases: Sequence[Lease], header: Callable[[list[Lease]], dict[str, Any]]
    ) -> list[tuple[list[int], Any]]:
        """One command per partition the leases were made in (`header` of that partition's
        leases), at once; (positions of its leases, its outcome) for each."""
        count = await self._partitions(queue)
        parts = partitions.split_leases(leases, count)
        outcomes = await asyncio.gather(
            *(self._command(log_name(queue, k), header(part)) for k, (part, _) in parts.items())
        )
        return [
            (positions, outcome) for (_, positions), outcome in zip(parts.values(), outcomes, strict=True)
        ]

    async def begin(self, queue: str, leases: Sequence[Lease]) -> list[bool]:
        if not leases:
            return []
        try:
            results = await self._by_partition(
                queue, leases, lambda part: {"op": "begin", "tok": new_token(), "l": _keys(part)}
            )
        except QueueNotFound:
            return [False] * len(leases)
        return [bool(status) for status in partitions.joined(len(leases), results, False)]

    async def extend_leases(self, queue: str, leases: Sequence[Lease], visibility_timeout: float) -> int:
        def header(part: list[Lease]) -> dict[str, Any]:
            return {"op": "extend", "tok": new_token(), "vt": visibility_timeout, "l": _keys(part)}

        try:
            return sum(int(renewed) for _, renewed in await self._by_partition(queue, leases, header))
        except QueueNotFound:
            return 0

    async def release(self, queue: str, leases: Sequence[Lease]) -> int:
        def header(part: list[Lease]) -> dict[str, Any]:
            return {"op": "release", "tok": new_token(), "l": _keys(part)}

        try:
            return sum(int(released) for _, released in await self._by_partition(queue, leases, header))
        except QueueNotFound:
            return 0

    # -- settling ----------------------------------------------------------------------------

    async def settle(self, queue: str, outcomes: Outcomes) -> list[bool]:
        targets = {move.queue for move in outcomes.dead_letters if move.queue is not None}
        # A missing dead-letter queue fails before any change. Asked every time (dead letters are
        # rare): another process may have deleted a queue this one knew, and a dead letter
        # moved out of its queue toward a missing one would wait in the outbox for good.
        for target in targets:
            try:
                await self.js.require_stream(target)
            except QueueNotFound:
                self._known.discard(target)
                raise
            self._known.add(target)
        await self._view(queue)  # QueueNotFound for a missing queue, as on every engine
        if not len(outcomes):
            return []
        # one settle record per partition the leases were made in, written at once
        parts, count = partitions.split_outcomes(outcomes, await self._partitions(queue))
        results = await asyncio.gather(
            *(self._settle_log(log_name(queue, k), part.outcomes) for k, part in parts.items())
        )
        return partitions.joined(
            count,
            [(part.positions, statuses) for part, statuses in zip(parts.values(), results, strict=True)],
            False,
        )

    async def _settle_log(self, log: str, outcomes: Outcomes) -> list[bool]:
        header = {
            "op": "settle",
            "tok": new_token(),
            "a": _keys(outcomes.acks),
            "r": [[lease[0], lease[1], delay] for lease, delay in outcomes.retries],
            "d": [
                [move.lease[0], move.lease[1], move.new_id, move.queue, move.record.to_dict()]
                for move in outcomes.dead_letters
            ],
        }
        settled: Settled = await self._command(log, header)
        if settled.moves:
            await self._finish_moves(log, await self._read_moves(await self._view(log), settled.moves))
        return settled.statuses

    @staticmethod
    async def _read_moves(view: QueueView, moves: Sequence[Move]) -> list[Copies]:
        """Moves with their copies' bodies, read from the source queue's log (the outbox keeps
        every record a copy's body lies in: compactions purge nothing below it)."""
        source = view.queue
        copies = [copy for move in moves for copy in move.copies]
        bodies = await view.bodies([copy.location for copy in copies])
        read = dict(zip((copy.id for copy in copies), bodies, strict=True))
        resolved: list[Copies] = []
        for move in moves:
            messages = []
            for copy in move.copies:
                body = read[copy.id]
                if body is None:
                    raise BackendUnavailable(f"queue {source}: the body of {copy.id} is gone from its log")
                messages.append(
                    Outgoing(
                        copy.id,
                        body,
                        copy.content_type,
                        copy.delay,
                        copy.dead_letter,
                        copy.timestamp,
                        headers=copy.headers,
                        group=copy.group,
                    )
                )
            resolved.append((move.id, move.destination, messages))
        return resolved

    async def _finish_moves(self, source: str, moves: Sequence[Copies]) -> None:
        """Store moves' copies in their destinations (once each, by Nats-Msg-Id; in the
        partitions they belong in), then clear them from the outbox of the `source` log."""
        if not moves:
            return

        async def copy(move_id: str, destination: str, messages: Sequence[Outgoing]) -> None:
            try:
                await self._append(destination, messages, f"move-{move_id}")
            except QueueNotFound:
                log.warning(
                    "queue %s was deleted: %d message(s) moving there from %s are dropped",
                    destination,
                    len(messages),
                    source,
                )

        await asyncio.gather(*(copy(*move) for move in moves))
        header = {"op": "moved", "ids": [move[0] for move in moves]}
        await self.js.publish(source, "log", records.encode(header), f"moved-{moves[0][0]}-{len(moves)}")

    # -- inspection --------------------------------------------------------------------------

    async def stats(self, queue: str) -> QueueStats:
        views = await self._all_synced(queue)
        now = max(view.now() for view in views)
        return partitions.total_stats(queue, [view.state.stats(now) for view in views])

    async def peek(self, queue: str, limit: int) -> list[StoredMessage]:
        views = await self._all_synced(queue)
        now = max(view.now() for view in views)
        if len(views) == 1:
            chosen = [(views[0], m) for m in views[0].state.peek(limit)]
        else:  # the partitions merged in send order (the order of a send_batch included)
            candidates = [(view, m) for view in views for m in view.state.peek_sent(limit)]
            candidates.sort(key=lambda pair: (pair[1].timestamp, pair[1].order))
            chosen = candidates[:limit]
        bodies: dict[str, bytes | None] = {}
        for view in views:
            messages = [m for owner, m in chosen if owner is view]
            if not messages:
                continue
            read = await view.bodies([m.location for m in messages])
            if any(body is None for body in read):  # a compaction moved them meanwhile
                found = await view.current_bodies([m.id for m in messages])
                read = [found.get(m.id) for m in messages]
            bodies.update(zip((m.id for m in messages), read, strict=True))
        return [m.stored(queue, now, body) for _, m in chosen if (body := bodies.get(m.id)) is not None]

    # -- bulk maintenance --------------------------------------------------------------------

    async def purge(self, queue: str) -> int:
        views = await self._all_views(queue)
        purged = await asyncio.gather(
            *(self._command(view.log, {"op": "purge", "tok": new_token()}) for view in views)
        )
        return sum(int(count) for count in purged)

    async def delete_message(self, queue: str, message_id: str) -> bool:
        log = queue
        if await self._partitions(queue) > 1:  # the partition this process reads it in
            holders = [
                view.log for view in await self._all_synced(queue) if message_id in view.state.messages
            ]
            if not holders:
                return False
            log = holders[0]
        deleted = await self._command(log, {"op": "delete", "tok": new_token(), "id": message_id})
        if deleted is None:
            raise MessageLeased(queue, message_id)
        return bool(deleted)

    async def move_messages(self, source: str, destination: str, limit: int | None) -> int:
        await self.js.require_stream(destination)
        views = await self._all_views(source)
        if len(views) > 1:  # with a limit, the partitions whose first message is oldest first
            views = await self._all_synced(source)
            views.sort(key=lambda view: min((m.visible_at for m in view.state.peek(1)), default=float("inf")))
        moved = 0
        for view in views:
            wanted = None if limit is None else limit - moved
            if wanted is not None and wanted <= 0:
                break
            move: Move = await self._command(
                view.log, {"op": "move", "tok": new_token(), "to": destination, "n": wanted}
            )
            if move.copies:
                await self._finish_moves(view.log, await self._read_moves(view, [move]))
            moved += len(move.copies)
        return moved

    async def sweep(self) -> int:
        """Sweep the queues this process reads, and those nobody reads: a queue with a reader
        elsewhere is that reader's to sweep (every reader sweeps what it holds). A queue nobody
        reads is read for the sweep and let go, and read again only once it may have work (see
        `_unread_due`): a worker does not come to hold every queue of the prefix."""
        held = {name: future.result() for name, future in self._views.items() if _ready(future)}
        removed = 0
        for name, view in held.items():
            if view.failed is not None:  # read no further (a newer conveyor's record): not ours
                continue
            try:
                removed += await self._sweep_view(name, view)
            except QueueNotFound:
                await self._forget(split_log(name)[0])
        streams = await self.js.queue_streams()
        for name in self._looked.keys() - streams.keys():
            del self._looked[name]
        for name, stream in streams.items():
            if name in held or stream.readers or not self._unread_due(name, stream):
                continue
            with contextlib.suppress(QueueNotFound):
                removed += await self._sweep_unread(name)
        return removed

    def _unread_due(self, name: str, stream: StreamState) -> bool:
        looked = self._looked.get(name)
        if looked is None or looked.created != stream.created:
            return True
        now = time.time()
        if stream.last_seq == looked.last_seq:  # nothing changed: exact
            return now >= looked.due
        # new records add messages younger than the last reading (a replay's keep their send
        # time) and begin moves that their writers finish: worth a look now and then
        return now >= min(looked.due, looked.read_at + UNREAD_QUEUE_RECHECK_SECONDS)

    async def _sweep_unread(self, name: str) -> int:
        view = await self._start_view(name, keep_swept=False)
        try:
            if view.failed is not None:  # a newer conveyor's record: read again only once it changed
                stream = await self.js.require_stream(name)
                self._looked[name] = _Looked(stream.created, stream.last_seq, time.time(), float("inf"))
                return 0
            removed = await self._sweep_view(name, view)
            await view.sync()
            now = view.now()
            due = view.state.sweep_due(MOVE_GRACE_SECONDS)
            self._looked[name] = _Looked(view.created or "", view.applied, now, due)
        finally:
            await view.close()
        return removed

    async def _sweep_view(self, name: str, view: QueueView) -> int:
        """Delete what is past retention and finish moves left by a process that stopped; writes
        a record only when there is something to do."""
        now = view.now()
        removed = 0
        if view.state.sweep_due(float("inf")) <= now:
            removed = int(await view.command({"op": "sweep", "tok": new_token()}))
        late = [m for m in view.state.outbox.values() if now - m.started_at > MOVE_GRACE_SECONDS]
        if late:
            await self._finish_moves(name, await self._read_moves(view, late))
        return removed

    # -- wake-ups ----------------------------------------------------------------------------

    async def wait_for_messages(self, queue: str, timeout: float) -> None:
        try:
            views = await self._all_views(queue)
        except QueueNotFound:
            await asyncio.sleep(timeout)
            return
        await wait_any(views, timeout)


def _ready(future: asyncio.Future[QueueView]) -> bool:
    return future.done() and not future.cancelled() and future.exception() is None


async def _close_view(future: asyncio.Future[QueueView]) -> None:
    """Close a view, or stop it starting."""
    if _ready(future):
        await future.result().close()
    else:
        future.cancel()


def _outgoing(message: OutgoingMessage) -> Outgoing:
    return Outgoing(
        message.id,
        message.body,
        message.content_type,
        message.delay_seconds,
        message.dead_letter,
        dedup_id=message.dedup_id,
        headers=message.headers,
        group=message.group,
    )


def _keys(leases: Sequence[Lease]) -> list[list[str]]:
    """Leases as records name them: [message id, token] (NATS lease ids name no row)."""
    return [[lease[0], lease[1]] for lease in leases]


def _subscription(key: str, value: dict[str, Any]) -> Subscription:
    topic, _, queue = key.partition("\n")
    types = value["types"]
    return Subscription(topic, queue, None if types is None else tuple(types), float(value["created"]))


def _without_queue(document: dict[str, Any], queue: str) -> None:
    for key in [key for key in document if key.partition("\n")[2] == queue]:
        del document[key]
