"""Net send and ack rates from two successive stats samples, for `conveyor top` and the dashboard.

A queue reports how many messages it holds, not how many passed through it, so a rate is the
growth (send) or the shrinking (ack: acks, dead letters, purges) of its total (backlog + delayed
+ in flight) per second between two samples: a lower bound of the true rate (a queue drained
exactly as fast as it fills shows 0 for both).
"""

from __future__ import annotations

from dataclasses import dataclass

from conveyor.types import QueueStats


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
