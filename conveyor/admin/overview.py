"""Every queue at a glance: its stats, the queue that holds its dead letters, and net rates
between two looks (for `conveyor queues list`, `conveyor top`, the dashboard and /metrics)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from conveyor.app import App
from conveyor.errors import QueueNotFound
from conveyor.types import QueueInfo, QueueStats

# Without a declared dead_letter_queue, `<queue>-dlq` holds a queue's dead letters when it exists.
DLQ_SUFFIX = "-dlq"


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
    """One queue with its stats; QueueNotFound if there is none."""
    info = await app.get_queue(name)
    return info, await app.queue(name).stats()


def declared_dead_letter_queues(app: App, declared: Mapping[str, str] | None = None) -> dict[str, str]:
    """queue -> dead-letter queue as the app's consumers name them, with `declared` (say, from
    conveyor.toml) winning."""
    named = {spec.queue: spec.dead_letter_queue for spec in app.consumers if spec.dead_letter_queue}
    return named | dict(declared or {})


def dead_letter_queues(names: list[str], declared: Mapping[str, str]) -> dict[str, str]:
    """queue -> its dead-letter queue, among the queues in `names`: the declared one (queue ->
    DLQ, from consumers or config) wins over the `<queue>-dlq` naming."""
    known = set(names)
    mapping = {name: name + DLQ_SUFFIX for name in names if name + DLQ_SUFFIX in known}
    mapping.update({queue: dlq for queue, dlq in declared.items() if queue in known and dlq in known})
    return mapping


# A queue reports how many messages it holds, not how many passed through it, so a rate is the
# growth (send) or the shrinking (ack: acks, dead letters, purges) of its total (backlog + delayed
# + in flight) per second between two samples: a lower bound of the true rate (a queue drained
# exactly as fast as it fills shows 0 for both).


@dataclass(frozen=True, slots=True)
class Sample:
    at: float  # time.monotonic()
    stats: dict[str, QueueStats]


def net_rates(previous: Sample | None, sample: Sample, queue: str) -> tuple[float | None, float | None]:
    """(send/s, ack/s) of `queue` between the samples; None where there is no earlier sample."""
    before = previous.stats.get(queue) if previous is not None else None
    after = sample.stats.get(queue)
    if previous is None or before is None or after is None or sample.at <= previous.at:
        return None, None
    flow = (after.total - before.total) / (sample.at - previous.at)
    return max(0.0, flow), max(0.0, -flow)
