"""Redriving dead letters in chunks, so each step stays a short transaction and progress shows."""

from __future__ import annotations

from collections.abc import Callable

from conveyor.app import App
from conveyor.errors import ConveyorValueError

# A replay moves this many dead letters per engine call.
REPLAY_CHUNK = 1_000


async def movable(app: App, dead_letter_queue: str, limit: int | None = None) -> int:
    """How many messages a replay of `dead_letter_queue` would move now (leased ones stay)."""
    stats = await app.queue(dead_letter_queue).stats()
    count = stats.backlog + stats.delayed
    return count if limit is None else min(limit, count)


async def replay(
    app: App,
    dead_letter_queue: str,
    to: str,
    limit: int | None = None,
    *,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Move up to `limit` (default: all) dead letters to `to`, REPLAY_CHUNK at a time; returns how
    many moved, calling `progress(moved so far)` after each chunk.

    `to` must exist already: a typo in it is an error, not a new queue.
    """
    if dead_letter_queue == to:
        raise ConveyorValueError(f"cannot replay queue {to!r} into itself")
    await app.get_queue(to)
    moved = 0
    while limit is None or moved < limit:
        step = REPLAY_CHUNK if limit is None else min(REPLAY_CHUNK, limit - moved)
        count = await app.replay(dead_letter_queue, to=to, limit=step)
        moved += count
        if progress is not None:
            progress(moved)
        if count < step:
            break
    return moved
