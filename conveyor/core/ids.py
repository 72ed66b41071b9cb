"""Message ids: 32 hex characters, time-ordered (48-bit milliseconds, then 80 random bits)."""

from __future__ import annotations

import os
import time


def new_message_id() -> str:
    return f"{time.time_ns() // 1_000_000:012x}{os.urandom(10).hex()}"


def new_message_ids(count: int) -> list[str]:
    """`count` ids for one batch: one clock read and one urandom call for all of them."""
    millis = f"{time.time_ns() // 1_000_000:012x}"
    random = os.urandom(10 * count).hex()
    return [millis + random[i : i + 20] for i in range(0, 20 * count, 20)]
