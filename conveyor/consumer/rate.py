"""Consumer rate limits (`max_rate="100/s"`): a token bucket the runner takes from before each
lease, so a worker leases no faster than the rate across all its batches.

Scope "process" (the default) keeps the bucket in the worker process: N workers lease up to N
times the rate. Scope "global" keeps it in the engine (`SharedRateLimits`), shared by every
process whose consumer of that queue says global: together they lease no faster than the rate.
The bucket holds at most one second of the rate (never less than one message, never more than
`max_batch_size`), and starts full.
"""

from __future__ import annotations

import re
import time
from typing import TYPE_CHECKING, Literal, Protocol

from conveyor import limits as L
from conveyor.backends.base import Backend, SharedRateLimits
from conveyor.errors import ConveyorValueError, LimitExceeded

if TYPE_CHECKING:
    from conveyor.consumer.spec import ConsumerSpec

RateScope = Literal["process", "global"]
RATE_SCOPES: tuple[RateScope, ...] = ("process", "global")

_RATE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*/\s*(s|sec|second|m|min|minute|h|hour)\s*")
_UNIT_SECONDS = {"s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60, "h": 3600, "hour": 3600}


def parse_rate(value: object) -> float:
    """Messages per second from "100/s", "600/m", "10/h" or a number (per second); LimitExceeded
    outside MIN_RATE_PER_SECOND-MAX_RATE_PER_SECOND or for anything else."""
    if isinstance(value, str):
        match = _RATE.fullmatch(value)
        if match is None:
            raise LimitExceeded(
                f'max_rate must look like "100/s", "600/m" or "10/h", got {value!r}',
                limit="max_rate",
                value=value,
            )
        rate: object = float(match[1]) / _UNIT_SECONDS[match[2]]
    else:
        rate = value
    return L.check_range("max_rate", rate, L.MIN_RATE_PER_SECOND, L.MAX_RATE_PER_SECOND)


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
