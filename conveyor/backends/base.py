"""The engine boundary: a handful of batched async operations every engine implements.

Policy lives in the core (conveyor/core/): retry counting, dead-letter decisions, checking and
de-duplicating a batch's outcomes, building dead-letter records, creating queues on first use.
An engine only stores, leases and moves messages, atomically and in batches: every operation on
a batch is one statement, transaction or script, never a loop of round trips. Engines never parse
lease ids: the core hands them `Lease` tuples.

To add an engine: subclass `Backend` in `conveyor/backends/<name>/`, add its URL scheme to
`conveyor/backends/__init__.py`, and add it to `tests/support/engines.py` so the conformance
suites run on it (docs/architecture.md).
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import uuid
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

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

# -- lease ids -------------------------------------------------------------------------------
# A lease id names one delivery of one message: "<message id>.<token>", the token being unique
# per lease call. An engine that settles by row number (`Backend.lease_rows`) appends ".<row>";
# a row number can be reused after a delete, the token tells the deliveries apart.


# A lease token's first character is the lease's kind, so that an engine that finds a lease
# expired knows whether that delivery reached a handler (docs/semantics.md, "Deliveries without
# an outcome"):
#   "h"  handed to a handler (or a pull client): an expiry is a delivery without an outcome,
#        which makes the message a suspect (`LeasedMessage.lost` grows by one)
#   "r"  read ahead by a worker, not yet handed to a handler: an expiry or a release gives its
#        attempt back; `Backend.begin` turns it into "h" when a handler starts on it
# Tokens of older releases (hex) count as "h"; a Redis replay's hold ("move-") counts neither.
HANDED = "h"
AHEAD = "r"


def new_token(handed: bool = True) -> str:
    """A unique lease token of the kind `handed` says (the other token uses need no kind)."""
    return (HANDED if handed else AHEAD) + uuid.uuid4().hex[1:]


def handed_token(token: str) -> str:
    """The token a read-ahead lease (`AHEAD`) has once `Backend.begin` handed it over."""
    return HANDED + token[1:]


def handed_lease_id(lease_id: str) -> str:
    """The lease id of a read-ahead delivery once `Backend.begin` handed it over."""
    message_id, _, rest = lease_id.partition(".")
    return f"{message_id}.{handed_token(rest)}" if rest else lease_id


def is_ahead(lease_id_or_token: str) -> bool:
    """Whether a lease id's token (or a token) is of a read-ahead lease."""
    _, dot, rest = lease_id_or_token.partition(".")
    return (rest if dot else lease_id_or_token).startswith(AHEAD)


def expiry_refunds(token: str) -> bool:
    """Whether a lease under `token` that expired gives its attempt back (it never reached a
    handler)."""
    return token.startswith(AHEAD)


def expiry_is_lost(token: str) -> bool:
    """Whether a lease under `token` that expired was a delivery without an outcome."""
    return not token.startswith((AHEAD, "move-"))


def expired_lease_counts(token: str) -> tuple[int, int]:
    """What a lease under `token` that expired does to its message's counts, for the engines that
    keep them in Python (memory, NATS): (attempts given back, deliveries without an outcome)."""
    if expiry_refunds(token):
        return 1, 0
    return 0, int(expiry_is_lost(token))


def make_lease_id(message_id: str, token: str) -> str:
    return f"{message_id}.{token}"


def make_row_lease_id(message_id: str, token: str, row: int) -> str:
    return f"{message_id}.{token}.{row}"


def parse_lease_id(lease_id: str, rows: bool) -> Lease | None:
    """The (message id, token, row) a lease id names; row is 0 unless `rows`. None when the id
    is not one an engine of that kind makes."""
    parts = lease_id.split(".")
    if rows:
        if len(parts) != 3 or not parts[0] or not parts[1] or not parts[2].isdigit():
            return None
        return parts[0], parts[1], int(parts[2])
    if len(parts) != 2 or not parts[0] or not parts[1]:
        return None
    return parts[0], parts[1], 0


# -- the protocol ------------------------------------------------------------------------------


class Backend(abc.ABC):
    """One engine bound to one URL. Instances are used from one event loop."""

    #: the engine's name as shown to users ("sqlite", "postgresql", ...)
    engine: str = ""
    #: True when the engine takes time from `clock` (so a fake clock drives it in tests);
    #: False when it uses its server's clock.
    uses_local_clock: bool = True
    #: True when its lease ids end with the message's row number (see `make_row_lease_id`)
    lease_rows: bool = False
    #: how many outcomes a consumer lets wait for their settle while its next batches run (they
    #: settle together): a speed setting, not a semantic; an engine whose every commit has a
    #: high fixed cost asks for more.
    settling_outcomes: int = 500

    def __init__(self, url: str, *, clock: Clock = SYSTEM_CLOCK) -> None:
        self.url = url
        self.clock = clock

    # -- lifecycle ---------------------------------------------------------------------------

    async def connect(self) -> None:  # noqa: B027 - optional hook, no-op by default
        """Open connections and create or migrate the schema. Idempotent."""

    async def close(self) -> None:  # noqa: B027 - optional hook, no-op by default
        """Release every connection. Idempotent."""

    @abc.abstractmethod
    def sibling(self) -> Backend:
        """A new, unconnected instance on the same storage, for use from another event loop."""

    # -- queues ------------------------------------------------------------------------------

    @abc.abstractmethod
    async def create_queue(self, name: str, settings: QueueSettings, *, exist_ok: bool) -> QueueInfo:
        """Create a queue; an existing one raises QueueAlreadyExists unless `exist_ok`."""

    @abc.abstractmethod
    async def get_queue(self, name: str) -> QueueInfo | None: ...

    @abc.abstractmethod
    async def update_queue(self, name: str, settings: QueueSettings) -> QueueInfo:
        """Replace a queue's settings; QueueNotFound if it does not exist."""

    @abc.abstractmethod
    async def delete_queue(self, name: str) -> bool:
        """Delete a queue, its messages and its topic subscriptions; False if there was none."""

    @abc.abstractmethod
    async def list_queues(self) -> list[QueueInfo]: ...

    @abc.abstractmethod
    async def set_paused(self, name: str, paused: bool) -> None:
        """Pause or resume delivery; QueueNotFound if the queue does not exist."""

    # -- topic subscriptions (durable fan-out; publishing is a send_many of one copy per match) --

    @abc.abstractmethod
    async def add_subscription(self, topic: str, queue: str, types: Sequence[str] | None) -> Subscription:
        """Subscribe `queue` to `topic`, replacing the type filter of an existing subscription.
        The queue need not exist yet (the core creates it)."""

    @abc.abstractmethod
    async def remove_subscription(self, topic: str, queue: str) -> bool:
        """Unsubscribe; False if there was no such subscription."""

    @abc.abstractmethod
    async def list_subscriptions(self, topic: str | None = None) -> list[Subscription]:
        """Every subscription (of one topic, when given), ordered by topic then queue."""

    # -- worker heartbeats (`conveyor workers`, the dashboard) ------------------------------------

    @abc.abstractmethod
    async def record_worker(self, worker: WorkerInfo, ttl: float) -> None:
        """Store a worker's heartbeat, replacing its last one; a heartbeat older than `ttl`
        seconds (by `seen_at`) may be deleted by any later write."""

    @abc.abstractmethod
    async def list_workers(self, since: float) -> list[WorkerInfo]:
        """The workers whose last heartbeat is at `since` or later, by id."""

    @abc.abstractmethod
    async def forget_worker(self, worker_id: str) -> None:
        """Delete a worker's heartbeat (it stopped); nothing if there is none."""

    # -- messages ----------------------------------------------------------------------------

    @abc.abstractmethod
    async def send_many(self, messages: Sequence[OutgoingMessage]) -> list[str]:
        """Store every message, all or none (they may name several queues); returns the id each
        message is stored under, in order.

        An id already stored in its queue is not stored again (a repeated write changes
        nothing). A message with a `dedup_id` that its queue saw within its dedup window (an
        earlier write, or an earlier message of this one) is not stored: its id in the reply is
        the first message's. That check and the claim are atomic across processes. A queue
        whose `dedup_window_seconds` is 0 ignores dedup ids.

        Raises QueueNotFound, storing nothing, when a named queue does not exist.
        """

    @abc.abstractmethod
    async def lease_many(
        self, queue: str, limit: int, visibility_timeout: float, *, handed: bool = True
    ) -> list[LeasedMessage]:
        """Lease up to `limit` visible messages, oldest first, each for `visibility_timeout` seconds.

        Each leased message's attempts grow by one. A paused or missing queue leases nothing.
        `handed` False leases ahead of the handlers: the token's kind is `AHEAD` (see
        `new_token`). A message whose last lease expired is counted by that lease's kind:
        `AHEAD` gives the attempt it took back (this lease's attempt replaces it); any other
        adds one to the message's `lost` (deliveries in a row without an outcome), which a retry
        resets and a release keeps.
        """

    async def lease_ahead(
        self, queue: str, limit: int, visibility_timeout: float, *, hand_first: int
    ) -> list[LeasedMessage]:
        """`lease_many(handed=False)`, except that an engine may lease the first `hand_first`
        messages that are not suspects (`lost` 0 after this lease) handed at once, as if
        `begin` had followed in the same transaction: only when the lease takes at least that
        many of them, and never a suspect. The worker asks for the batches it starts or begins
        the moment the lease returns, so a message is counted the same either way and the begin's
        round trip (and its write of every row) is saved. Here: everything ahead; the worker
        begins what it starts, as the lease ids say (`is_ahead`)."""
        return await self.lease_many(queue, limit, visibility_timeout, handed=False)

    @abc.abstractmethod
    async def begin(self, queue: str, leases: Sequence[Lease]) -> list[bool]:
        """Mark read-ahead leases as handed to a handler (their token becomes `handed_token`),
        durably, before the handler starts; one status per lease: False where it was not live."""

    @abc.abstractmethod
    async def extend_leases(self, queue: str, leases: Sequence[Lease], visibility_timeout: float) -> int:
        """Push the deadline of live leases to now + `visibility_timeout`; returns how many were live."""

    @abc.abstractmethod
    async def release(self, queue: str, leases: Sequence[Lease]) -> int:
        """Give leased messages back at once, as if never delivered (their attempts shrink by one)."""

    @abc.abstractmethod
    async def settle(self, queue: str, outcomes: Outcomes) -> list[bool]:
        """Apply one batch's outcomes in one transaction: delete acks, delay retries, and move
        dead letters to their queue with their record (or delete them).

        The core has checked the list: every lease is well formed and named once. Returns one
        status per item, in the order acks, retries, dead letters: True where it took effect,
        False where the lease had expired or was unknown (stale: that item changed nothing).
        Raises QueueNotFound, changing nothing, when the queue or a dead-letter queue does not exist.
        """

    @abc.abstractmethod
    async def stats(self, queue: str) -> QueueStats:
        """QueueNotFound if the queue does not exist."""

    @abc.abstractmethod
    async def peek(self, queue: str, limit: int) -> list[StoredMessage]:
        """Look at up to `limit` messages, oldest visible first, without leasing them."""

    @abc.abstractmethod
    async def purge(self, queue: str) -> int:
        """Delete every message of the queue; returns how many."""

    @abc.abstractmethod
    async def delete_message(self, queue: str, message_id: str) -> bool:
        """Delete one message by id, atomically, wherever it is (ready, delayed, or with a lease
        that has expired); False if the queue holds no such message. A message under a live lease
        raises MessageLeased and changes nothing. QueueNotFound if the queue does not exist."""

    @abc.abstractmethod
    async def move_messages(self, source: str, destination: str, limit: int | None) -> int:
        """Move up to `limit` unleased messages atomically (for DLQ replay): they keep id, body and
        content type, start again at attempts 0, are visible at once and lose dead-letter info."""

    @abc.abstractmethod
    async def sweep(self) -> int:
        """Delete messages older than their queue's retention (and dedup ids past their
        window); returns how many messages."""

    @abc.abstractmethod
    async def wait_for_messages(self, queue: str, timeout: float) -> None:
        """Return when `queue` may have deliverable messages (a send, a retry, a delayed message
        coming due, a lease expiring) or after `timeout` seconds, whichever is first."""

    async def wait_and_lease(
        self, queue: str, limit: int, visibility_timeout: float, timeout: float, *, handed: bool = True
    ) -> list[LeasedMessage]:
        """`wait_for_messages`, then `lease_many`, as one call: an engine that can lease the
        moment it is woken does (Redis queues the lease behind its blocking pop, which saves the
        round trip after every wake-up).

        Cancelled while waiting, it leases nothing. Here a cancel that comes during the lease
        lets the lease finish and gives its messages back; an engine that leases on the server
        as it wakes may lose the reply of a lease taken in that instant, and those messages
        come back when the lease expires, as after a crash."""
        await self.wait_for_messages(queue, timeout)
        lease = asyncio.ensure_future(self.lease_many(queue, limit, visibility_timeout, handed=handed))
        try:
            return await asyncio.shield(lease)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):  # a failed give-back expires like any lease
                leased = await lease
                parsed = [parse_lease_id(m.lease_id, self.lease_rows) for m in leased]
                if leased:
                    await self.release(queue, [lease for lease in parsed if lease is not None])
            raise


# -- capabilities: what only some engines can do --------------------------------------------------


@runtime_checkable
class SendsInTransaction(Protocol):
    """An engine that can write messages inside the caller's open transaction (PostgreSQL): they
    exist if and only if that transaction commits. `Queue.send(..., connection=)` needs it."""

    async def send_many_in(self, connection: Any, messages: Sequence[OutgoingMessage]) -> list[str]:
        """Write `messages` with `connection` and do not commit; ids, QueueNotFound and QueueFull
        as `send_many` (a refused send leaves nothing in the caller's transaction)."""


@runtime_checkable
class SharedRateLimits(Protocol):
    """An engine that keeps token buckets every process shares (PostgreSQL, Redis, NATS): a
    consumer's `max_rate_scope="global"`. A bucket is named by its queue; it holds at most
    `burst` tokens and gains `rate` a second, on the server's clock."""

    async def take_tokens(self, queue: str, wanted: int, rate: float, burst: float) -> tuple[int, float]:
        """Take up to `wanted` tokens in one atomic step: (how many were taken, seconds until
        one more is due when none were)."""

    async def give_back_tokens(self, queue: str, count: int, burst: float) -> None:
        """Return tokens taken but not used."""
