"""The few multi-step operations the API, the dashboard and /metrics share, on the public API."""

from __future__ import annotations

from conveyor.app import App
from conveyor.errors import ConveyorValueError, QueueNotFound
from conveyor.types import QueueInfo, QueueStats

# A replay moves this many dead letters per step, so each step stays a short transaction.
REPLAY_CHUNK = 1_000


async def every_queue(app: App) -> list[tuple[QueueInfo, QueueStats]]:
    """Every queue with its stats, by name; a queue deleted meanwhile is left out."""
    rows = []
    for info in await app.list_queues():
        try:
            rows.append((info, await app.queue(info.name).stats()))
        except QueueNotFound:
            continue
    return sorted(rows, key=lambda row: row[0].name)


async def one_queue(app: App, name: str) -> tuple[QueueInfo, QueueStats]:
    info = await app.get_queue(name)
    return info, await app.queue(name).stats()


async def replay(app: App, dead_letter_queue: str, to: str, limit: int | None) -> int:
    """Move up to `limit` (default: all) dead letters to `to`, in steps; returns how many moved.

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
        if count < step:
            break
    return moved
