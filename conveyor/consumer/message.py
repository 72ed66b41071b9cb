"""Message and MessageBatch: what a consumer handler receives and marks."""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any

from conveyor.codec import decode_body
from conveyor.headers import NO_HEADERS
from conveyor.limits import DEFAULT_LIMITS, Limits, check_delay
from conveyor.types import ContentType, DeadLetterInfo, LeasedMessage, QueueStats

# Longest error text kept with a dead letter.
MAX_ERROR_CHARS = 2_000


def error_text(exc: BaseException | None, fallback: str) -> str:
    """Why a message is dead-lettered: the exception as `Type: message` (cut to MAX_ERROR_CHARS)."""
    if exc is None:
        return fallback
    return f"{type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS]


class Outcome(enum.Enum):
    """What a handler decided for one message."""

    ACK = "ack"
    RETRY = "retry"
    DEAD_LETTER = "dead_letter"


class Message:
    """One delivered message. Mark it with `ack()`, `retry()` or `dead_letter()`; the first call wins."""

    __slots__ = ("_body", "_decoded", "_leased", "_limits", "outcome", "reason", "retry_delay")

    def __init__(self, leased: LeasedMessage, limits: Limits = DEFAULT_LIMITS) -> None:
        self._leased = leased
        self._limits = limits  # the App's: bounds `retry(delay_seconds=)`
        self._body: Any = None
        self._decoded = False
        self.outcome: Outcome | None = None
        self.retry_delay: float | None = None
        self.reason: str | None = None

    @property
    def id(self) -> str:
        """The message's id, unique and the same on every delivery."""
        return self._leased.id

    @property
    def timestamp(self) -> dt.datetime:
        """When the message was sent (UTC)."""
        return dt.datetime.fromtimestamp(self._leased.timestamp, dt.UTC)

    @property
    def attempts(self) -> int:
        """1 on first delivery."""
        return self._leased.attempts

    @property
    def group(self) -> str | None:
        """Its ordered message group (`Queue.send(group=)`), None when it has none."""
        return self._leased.group

    @property
    def content_type(self) -> ContentType:
        """`"json"`, `"text"` or `"bytes"`: what `body` decodes to."""
        return self._leased.content_type

    @property
    def raw(self) -> bytes:
        """The body as stored."""
        return self._leased.body

    @property
    def body(self) -> Any:
        """The decoded body (JSON value, str or bytes), decoded once on first access."""
        if not self._decoded:
            self._body = decode_body(self._leased.body, self._leased.content_type)
            self._decoded = True
        return self._body

    @property
    def lease_id(self) -> str:
        """Names this delivery and no other (a redelivery gets a new one)."""
        return self._leased.lease_id

    @property
    def headers(self) -> Mapping[str, str]:
        """The headers it was sent with (read-only; empty when none). A dead letter's include
        its record (`conveyor-dead-letter-*`), and a replay keeps them (docs/semantics.md)."""
        headers = self._leased.headers
        return NO_HEADERS if headers is None else MappingProxyType(headers)

    @property
    def dead_letter_info(self) -> DeadLetterInfo | None:
        """For a message in a dead-letter queue: where it came from and its last error."""
        return self._leased.dead_letter

    def ack(self) -> None:
        """Mark as done; it is deleted when the batch settles."""
        self._mark(Outcome.ACK)

    def retry(self, *, delay_seconds: float | None = None, reason: str | None = None) -> None:
        """Deliver again later: after `delay_seconds` (0 to the App's `max_delay_seconds`), else
        after the consumer's `retry_delay` or backoff.

        `reason` says why: a message out of retries goes to the dead-letter queue with it as its
        error (else with the handler's exception, or "retried by the handler")."""
        if delay_seconds is not None:
            check_delay("delay_seconds", delay_seconds, self._limits)
        self._mark(Outcome.RETRY, delay_seconds=delay_seconds, reason=_reason(reason))

    def dead_letter(self, reason: str) -> None:
        """Never retry: move to the consumer's dead-letter queue now (dropped if it has none)."""
        self._mark(Outcome.DEAD_LETTER, reason=_reason(reason))

    def _mark(
        self, outcome: Outcome, *, delay_seconds: float | None = None, reason: str | None = None
    ) -> None:
        if self.outcome is None:
            self.outcome = outcome
            self.retry_delay = delay_seconds
            self.reason = reason

    def __repr__(self) -> str:
        return f"Message(id={self.id!r}, attempts={self.attempts}, outcome={self.outcome})"


def _reason(reason: str | None) -> str | None:
    """A handler's reason as kept with a dead letter: a str, cut to MAX_ERROR_CHARS."""
    if reason is None:
        return None
    if not isinstance(reason, str):
        raise TypeError(f"reason must be a str, not {type(reason).__name__}")
    return reason[:MAX_ERROR_CHARS]


class MessageBatch:
    """The messages of one delivery, all from `queue`."""

    __slots__ = ("_stats", "_stats_source", "messages", "queue")

    def __init__(
        self,
        queue: str,
        messages: Sequence[Message],
        stats: QueueStats | None = None,
        *,
        stats_source: Callable[[], QueueStats | None] | None = None,
    ) -> None:
        self.queue = queue
        self.messages = list(messages)
        self._stats = stats
        self._stats_source = stats_source

    @property
    def stats(self) -> QueueStats | None:
        """The queue's last known stats, for metrics: a snapshot the worker refreshes in the
        background (at most every `STATS_INTERVAL_SECONDS`, and only while handlers read it,
        since counting a long backlog costs the engine a scan); None before the first one."""
        if self._stats_source is not None:
            return self._stats_source()
        return self._stats

    @property
    def backlog_count(self) -> int | None:
        """`stats.backlog`, as Cloudflare's `batch.metadata.metrics.backlogCount`; None before the first."""
        return None if self.stats is None else self.stats.backlog

    def ack_all(self) -> None:
        """Ack every message not marked yet (an earlier `retry()` or `dead_letter()` stands)."""
        for message in self.messages:
            message.ack()

    def retry_all(self, *, delay_seconds: float | None = None, reason: str | None = None) -> None:
        """Retry every message not marked yet, after `delay_seconds` (0-86,400) or the consumer's
        `retry_delay` or backoff; `reason` as in `Message.retry`."""
        for message in self.messages:
            message.retry(delay_seconds=delay_seconds, reason=reason)

    def __len__(self) -> int:
        return len(self.messages)

    def __repr__(self) -> str:
        return f"MessageBatch(queue={self.queue!r}, size={len(self.messages)})"
