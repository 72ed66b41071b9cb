"""The in-process event bus: publish an event once, every interested asyncio task gets its own copy.

bus = EventBus()
async with bus.subscribe("ORDER_UP", "SHUTDOWN") as events:
    async for event in events: ...          # ends after bus.close(), once earlier events are read
await bus.publish("ORDER_UP", {"table": 4})

Each subscriber has its own bounded queue, so a slow subscriber never holds up the others. For
fan-out between processes, through the engine, see `conveyor.topics` (`app.topic(name)`).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import itertools
import logging
import os
import sys
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass, field
from types import FrameType
from typing import Any, Final, Literal

from conveyor import limits as L
from conveyor.errors import EventBusClosed

log = logging.getLogger("conveyor.events")

Overflow = Literal["wait", "drop_oldest"]
OVERFLOW_POLICIES: tuple[Overflow, ...] = ("wait", "drop_oldest")
#: `subscribe("*")` (or no type at all) receives every event
ALL: Final = "*"

# Event ids: a random per-process prefix and a counter, about 10x cheaper than a message id.
_id_prefix = os.urandom(6).hex()
_id_counter = itertools.count(1)


def _new_process_prefix() -> None:
    global _id_prefix
    _id_prefix = os.urandom(6).hex()


os.register_at_fork(after_in_child=_new_process_prefix)  # a forked child must not repeat ids


def new_event_id() -> str:
    """A unique event id: 12 hex characters naming the process, 16 counting its events."""
    return f"{_id_prefix}{next(_id_counter):016x}"


@dataclass(frozen=True, slots=True)
class Event:
    """One published event. `source` is "module:function" of the code that published it."""

    type: str
    data: Any
    id: str = field(default_factory=new_event_id)
    timestamp: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))
    source: str = ""


class _Shutdown:
    """The sentinel `close()` puts behind the last event of every subscriber."""


_SHUTDOWN: Final = _Shutdown()


class Subscriber:
    """One subscription: an async iterator of the events it matches, in publish order.

    `dropped` counts the events it lost because its queue was full.
    """

    def __init__(self, types: frozenset[str] | None, maxsize: int, overflow: Overflow) -> None:
        self.types = types
        self.maxsize = maxsize
        self.overflow: Overflow = overflow
        self.dropped = 0
        self._queue: asyncio.Queue[Event | _Shutdown] = asyncio.Queue(maxsize)
        self._closed = False  # no more events will come: end once the queue is empty
        self._ended = False
        # set after a full queue made a publisher wait in vain: later events are dropped at once
        # (not waited for again) until the subscriber makes room, so a stuck subscriber costs
        # publishers one `put_timeout` per stall, not one per event
        self._lagging = False

    def __repr__(self) -> str:
        types = "*" if self.types is None else ",".join(sorted(self.types))
        return f"<Subscriber {types} pending={self.pending} dropped={self.dropped}>"

    @property
    def pending(self) -> int:
        """Events delivered to this subscriber and not read yet."""
        return self._queue.qsize()

    def __aiter__(self) -> Subscriber:
        return self

    async def __anext__(self) -> Event:
        if self._ended:
            raise StopAsyncIteration
        if self._queue.empty() and self._closed:
            item: Event | _Shutdown = _SHUTDOWN
        else:
            item = await self._queue.get()
        if isinstance(item, _Shutdown):
            self._ended = True
            raise StopAsyncIteration
        return item

    # -- called by the bus -------------------------------------------------------------------

    def _offer(self, event: Event) -> bool:
        """Enqueue without waiting; False when the queue is full and the policy is to wait."""
        if not self._queue.full():
            self._lagging = False
            self._queue.put_nowait(event)
            return True
        if self.overflow == "drop_oldest":
            oldest = self._queue.get_nowait()
            self._queue.put_nowait(event)
            if isinstance(oldest, Event):
                self._drop(oldest, "the oldest unread event made room for a new one")
            return True
        if self._lagging:
            self._drop(event, "still full")
            return True
        return False

    async def _wait_and_put(self, event: Event, timeout: float | None) -> None:
        try:
            async with asyncio.timeout(timeout):
                await self._queue.put(event)
        except TimeoutError:
            self._lagging = True
            self._drop(event, f"full for {timeout} s")

    def _drop(self, event: Event, why: str) -> None:
        self.dropped += 1
        log.debug("subscriber %r dropped event %s %s: %s", self, event.type, event.id, why)

    def _close(self) -> None:
        self._closed = True
        if not self._queue.full():
            self._queue.put_nowait(_SHUTDOWN)  # wakes a reader waiting on an empty queue
        # a full queue needs no sentinel: its reader is not waiting, and ends when it runs dry

    def _detach(self) -> None:
        self._closed = self._ended = True
        while not self._queue.empty():  # frees a publisher that may be waiting for room here
            self._queue.get_nowait()


class EventBus:
    """Fans events out to asyncio tasks in this process.

    Each subscriber gets its own queue of `maxsize` events (default 1,000). When a subscriber's
    queue is full, `overflow` says what happens:

    - `"wait"` (default): the publisher waits up to `put_timeout` seconds (default 1.0; None
      waits as long as it takes) for room, then drops the event for that subscriber and counts
      it in `subscriber.dropped`. Until that subscriber makes room, later events for it are
      dropped at once, so a stuck subscriber costs publishers one timeout per stall. Other
      subscribers get every event the moment it is published, before the publisher waits.
    - `"drop_oldest"`: the subscriber's oldest unread event is dropped (counted in
      `subscriber.dropped`) to make room; publishers never wait.

    `subscribe(..., maxsize=, overflow=)` overrides both for one subscriber. Every subscriber
    sees events in publish order. `close()` ends every subscriber's `async for` once it has read
    the events published before it; `publish` after `close` raises EventBusClosed.
    """

    def __init__(
        self,
        *,
        maxsize: int = L.DEFAULT_EVENT_BUS_MAXSIZE,
        overflow: Overflow = "wait",
        put_timeout: float | None = L.DEFAULT_EVENT_BUS_PUT_TIMEOUT,
    ) -> None:
        self.maxsize = _check_maxsize(maxsize)
        self.overflow = _check_overflow(overflow)
        if put_timeout is not None:
            L.check_range("put_timeout", put_timeout, 0, L.MAX_EVENT_BUS_PUT_TIMEOUT)
        self.put_timeout = put_timeout
        self.published = 0
        self._by_type: dict[str, list[Subscriber]] = {}
        self._everything: list[Subscriber] = []
        # held while an event is being fanned out, so that events reach every subscriber in
        # publish order even while one publisher waits for room
        self._lock = asyncio.Lock()
        self._closed = False

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<EventBus {state} subscribers={len(self.subscribers)} published={self.published}>"

    async def __aenter__(self) -> EventBus:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @property
    def closed(self) -> bool:
        """True once `close()` has been called."""
        return self._closed

    @property
    def subscribers(self) -> list[Subscriber]:
        """The subscriptions open now."""
        unique = {id(s): s for subs in (self._everything, *self._by_type.values()) for s in subs}
        return list(unique.values())

    @property
    def dropped(self) -> int:
        """Events lost by all current subscribers together."""
        return sum(subscriber.dropped for subscriber in self.subscribers)

    # -- subscribing -------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def subscribe(
        self, *types: str, maxsize: int | None = None, overflow: Overflow | None = None
    ) -> AsyncIterator[Subscriber]:
        """Receive the events of these types (every event with no type or "*") until the block ends.

        Events published before the block started are not delivered. On a closed bus the
        iterator ends at once.
        """
        for event_type in types:
            _check_type(event_type)
        wanted = None if not types or ALL in types else frozenset(types)
        subscriber = Subscriber(
            wanted,
            self.maxsize if maxsize is None else _check_maxsize(maxsize),
            self.overflow if overflow is None else _check_overflow(overflow),
        )
        if self._closed:
            subscriber._close()
        else:
            self._attach(subscriber)
        try:
            yield subscriber
        finally:
            self._remove(subscriber)
            subscriber._detach()

    def _attach(self, subscriber: Subscriber) -> None:
        if subscriber.types is None:
            self._everything.append(subscriber)
            return
        for event_type in subscriber.types:
            self._by_type.setdefault(event_type, []).append(subscriber)

    def _remove(self, subscriber: Subscriber) -> None:
        with contextlib.suppress(ValueError):
            self._everything.remove(subscriber)
        for event_type in subscriber.types or ():
            subscribers = self._by_type.get(event_type, [])
            with contextlib.suppress(ValueError):
                subscribers.remove(subscriber)
            if not subscribers:
                self._by_type.pop(event_type, None)

    # -- publishing --------------------------------------------------------------------------

    def publish(
        self, type: str, data: Any = None, *, source: str | None = None
    ) -> Coroutine[Any, Any, Event]:
        """Publish an event to every matching subscriber; await it. Returns the Event.

        `source` defaults to "module:function" of the caller. A plain function returning a
        coroutine, so the caller is known even when the coroutine is run as a separate task.
        """
        _check_type(type)
        if source is None:
            source = _source(sys._getframe(1))
        return self._publish(Event(type, data, source=source))

    async def _publish(self, event: Event) -> Event:
        async with self._lock:
            if self._closed:
                raise EventBusClosed(f"cannot publish {event.type!r}: the event bus is closed")
            targets = self._everything + self._by_type.get(event.type, [])
            self.published += 1
            log.debug(
                "event %s %s from %s to %d subscriber(s)", event.type, event.id, event.source, len(targets)
            )
            # everyone with room gets the event now; only then wait for the full ones
            waiting = [subscriber for subscriber in targets if not subscriber._offer(event)]
            if len(waiting) == 1:
                await waiting[0]._wait_and_put(event, self.put_timeout)
            elif waiting:
                await asyncio.gather(*(s._wait_and_put(event, self.put_timeout) for s in waiting))
        return event

    async def close(self) -> None:
        """Stop accepting events; every subscriber's loop ends after the events published before.

        Waits for a publish under way to finish (at most `put_timeout`). Idempotent.
        """
        async with self._lock:
            if self._closed:
                return
            self._closed = True
            for subscriber in self.subscribers:
                subscriber._close()
        log.debug("event bus closed after %d event(s)", self.published)


def _source(frame: FrameType) -> str:
    module = frame.f_globals.get("__name__", "?")
    return f"{module}:{frame.f_code.co_qualname}"


def _check_type(event_type: object) -> None:
    if not isinstance(event_type, str) or not event_type:
        raise TypeError(f"an event type is a non-empty str, got {event_type!r}")


def _check_maxsize(maxsize: int) -> int:
    return L.check_int_range("maxsize", maxsize, 1, L.MAX_EVENT_BUS_MAXSIZE)


def _check_overflow(overflow: object) -> Overflow:
    for policy in OVERFLOW_POLICIES:
        if overflow == policy:
            return policy
    raise ValueError(f"overflow must be one of {', '.join(OVERFLOW_POLICIES)}; got {overflow!r}")


__all__ = ["ALL", "Event", "EventBus", "Overflow", "Subscriber"]
