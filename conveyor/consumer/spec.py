"""A consumer's settings, validated once when it is registered."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from conveyor import limits as L
from conveyor.consumer.backoff import RETRY_BACKOFFS, RetryBackoff
from conveyor.consumer.env import Env
from conveyor.consumer.message import MessageBatch
from conveyor.consumer.rate import RateScope, check_scope
from conveyor.errors import ConveyorValueError, LimitExceeded
from conveyor.limits import parse_rate

Handler = Callable[[MessageBatch, Env], Awaitable[Any]]
#: what `@app.lifespan` registers: sets up `env` resources on entry, tears them down on exit
Lifespan = Callable[[Env], contextlib.AbstractAsyncContextManager[Any]]


@dataclass(frozen=True)
class ConsumerSpec:
    queue: str
    handler: Handler
    max_batch_size: int = L.DEFAULT_MAX_BATCH_SIZE
    max_batch_timeout: float = L.DEFAULT_MAX_BATCH_TIMEOUT
    max_retries: int = L.DEFAULT_MAX_RETRIES
    retry_delay: float = L.DEFAULT_RETRY_DELAY
    dead_letter_queue: str | None = None
    max_concurrency: int | None = None
    visibility_timeout: float = L.DEFAULT_VISIBILITY_TIMEOUT
    #: the most messages per second this consumer leases ("100/s", "600/m", "10/h" or a number)
    max_rate: str | float | None = None
    #: "process": each worker process has its own bucket; "global": one bucket in the engine
    max_rate_scope: RateScope = "process"
    #: the handler's time limit in seconds (None: none)
    timeout: float | None = None
    retry_backoff: RetryBackoff = "fixed"
    retry_backoff_base: float = L.DEFAULT_RETRY_BACKOFF_BASE
    retry_backoff_cap: float = L.DEFAULT_RETRY_BACKOFF_CAP
    #: the App's limits, which every setting above is checked against
    limits: L.Limits = field(default=L.DEFAULT_LIMITS, repr=False, compare=False)

    def __post_init__(self) -> None:
        limits = self.limits
        L.validate_queue_name(self.queue)
        if not callable(self.handler):
            raise TypeError(f"consumer handler for {self.queue!r} is not callable: {self.handler!r}")
        L.check_int_range("max_batch_size", self.max_batch_size, 1, limits.max_batch_size)
        L.check_range("max_batch_timeout", self.max_batch_timeout, 0, limits.max_batch_timeout)
        L.check_int_range("max_retries", self.max_retries, 0, limits.max_retries)
        L.check_delay("retry_delay", self.retry_delay, limits)
        L.check_visibility_timeout(self.visibility_timeout, limits)
        if self.max_concurrency is not None:
            L.check_int_range("max_concurrency", self.max_concurrency, 1, limits.max_concurrency)
        if self.max_rate is not None:
            parse_rate(self.max_rate)
        check_scope(self.max_rate_scope)
        if self.timeout is not None:
            L.check_range("timeout", self.timeout, L.MIN_HANDLER_TIMEOUT, limits.max_handler_timeout)
        self._check_backoff()
        if self.dead_letter_queue is not None:
            L.validate_queue_name(self.dead_letter_queue)
            if self.dead_letter_queue == self.queue:
                raise ValueError(f"queue {self.queue!r} cannot be its own dead-letter queue")

    def _check_backoff(self) -> None:
        if self.retry_backoff not in RETRY_BACKOFFS:
            raise LimitExceeded(
                f"retry_backoff must be 'fixed' or 'exponential', got {self.retry_backoff!r}",
                limit="retry_backoff",
                value=self.retry_backoff,
            )
        L.check_delay("retry_backoff_base", self.retry_backoff_base, self.limits)
        L.check_delay("retry_backoff_cap", self.retry_backoff_cap, self.limits)
        if self.retry_backoff == "exponential" and self.retry_delay != 0:
            raise ConveyorValueError(
                "retry_delay is the fixed delay of retry_backoff='fixed'; with "
                "retry_backoff='exponential' set retry_backoff_base and retry_backoff_cap instead"
            )

    @property
    def rate_per_second(self) -> float | None:
        """`max_rate` in messages per second; None without a limit."""
        return None if self.max_rate is None else parse_rate(self.max_rate)

    @property
    def name(self) -> str:
        return getattr(self.handler, "__qualname__", type(self.handler).__name__)
