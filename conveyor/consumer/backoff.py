"""Retry delays: a fixed `retry_delay`, or exponential backoff with full jitter."""

from __future__ import annotations

import random
from typing import Literal

RetryBackoff = Literal["fixed", "exponential"]
RETRY_BACKOFFS: tuple[RetryBackoff, ...] = ("fixed", "exponential")


def exponential_ceiling(attempts: int, base: float, cap: float) -> float:
    """The longest wait before the retry that follows delivery `attempts` (1 for the first):
    `min(cap, base * 2 ** (attempts - 1))`, without computing a huge power."""
    exponent = max(attempts - 1, 0)
    if exponent >= 64 or base * 2.0**exponent >= cap:
        return cap
    return base * 2.0**exponent


def full_jitter(ceiling: float, rng: random.Random) -> float:
    """A uniformly random wait in [0, ceiling] ("full jitter": retries of many messages that
    failed together spread out instead of coming back at once)."""
    return rng.uniform(0.0, ceiling)
