"""Consumer rate limits (`max_rate="100/s"`): a token bucket the runner takes from before each
lease, so a worker leases no faster than the rate across all its batches.

Scope "process" (the default) keeps the bucket in the worker process: N workers lease up to N
times the rate. Scope "global" keeps it in the engine (`SharedRateLimits`), shared by every
process whose consumer of that queue says global: together they lease no faster than the rate.
The bucket holds at most one second of the rate (never less than one message, never more than
`max_batch_size`), and starts full.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Literal, Protocol

from conveyor.backends.base import Backend, SharedRateLimits
from conveyor.errors import ConveyorValueError, LimitExceeded

if TYPE_CHECKING:
    from conveyor.consumer.spec import ConsumerSpec

RateScope = Literal["process", "global"]
RATE_SCOPES: tuple[RateScope, ...] = ("process", "global")


def check_scope(value: object) -> RateScope:
    if value not in RATE_SCOPES:
        raise LimitExceeded(
            f"max_rate_scope must be one of {RATE_SCOPES}, got {value!r}", limit="max_rate_scope", value=value
        )
    return value


def burst_of(rate: float, max_batch_size: int) -> float:
    """How many tokens the bucket holds at most: one second of the rate, within 1..max_batch_size."""
    return float(min(max_batch_size, max(1.0, rate)))


class Bucket(Protocol):
    async def take(self, wanted: int) -> tuple[int, float]:
        """Take up to `wanted` tokens: (how many were taken, seconds until one more is due when none)."""
        ...

    async def give_back(self, count: int) -> None:
        """Return tokens taken but not used (a lease found fewer messages)."""
        ...


class TokenBucket:
    """A bucket in this process (scope "process")."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = burst
        self._updated = time.monotonic()

    def _refill(self) -> None:
        now = time.monotonic()
        self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate)
        self._updated = now

    async def take(self, wanted: int) -> tuple[int, float]:
        self._refill()
        taken = min(wanted, int(self._tokens))
        self._tokens -= taken
        return taken, 0.0 if taken else (1 - self._tokens) / self.rate

    async def give_back(self, count: int) -> None:
        self._tokens = min(self.burst, self._tokens + count)


class SharedBucket:
    """A bucket kept in the engine (scope "global"), named by the queue."""

    def __init__(self, engine: SharedRateLimits, queue: str, rate: float, burst: float) -> None:
        self.engine = engine
        self.queue = queue
        self.rate = rate
        self.burst = burst

    async def take(self, wanted: int) -> tuple[int, float]:
        return await self.engine.take_tokens(self.queue, wanted, self.rate, self.burst)

    async def give_back(self, count: int) -> None:
        await self.engine.give_back_tokens(self.queue, count, self.burst)


def rate_bucket(backend: Backend, spec: ConsumerSpec) -> Bucket | None:
    """The bucket a consumer takes from before each lease; None without `max_rate`."""
    rate = spec.rate_per_second
    if rate is None:
        return None
    burst = burst_of(rate, spec.max_batch_size)
    if spec.max_rate_scope == "global":
        return SharedBucket(shared_rate_limits(backend), spec.queue, rate, burst)
    return TokenBucket(rate, burst)


def shared_rate_limits(backend: Backend) -> SharedRateLimits:
    """The engine, if it can keep a rate limit shared by every process; else ConveyorValueError."""
    if not isinstance(backend, SharedRateLimits):
        raise ConveyorValueError(
            f'max_rate_scope="global" needs an engine every worker shares a server with '
            f"(postgresql, redis, nats); the {backend.engine} engine has only the per-process scope"
        )
    return backend
