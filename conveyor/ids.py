"""Message ids: 32 hex characters, time-ordered (48-bit milliseconds, then 80 random bits)."""

from __future__ import annotations

import os
import time


def new_message_id() -> str:
    return f"{time.time_ns() // 1_000_000:012x}{os.urandom(10).hex()}"
