"""How big each case is in each mode: `--smoke` proves the suite works in seconds, `--quick` gives
usable figures in a few minutes, the default full run is the one to quote."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Mode:
    name: str
    #: medians are taken over this many runs of every case
    repeats: int
    #: messages sent one by one, sequentially (raw ceiling and conveyor alike)
    one_by_one: int
    #: messages sent one by one by 100 concurrent tasks
    concurrent: int
    #: messages sent (and raw-inserted) in batches of 100
    batched: int
    #: messages drained by the consumer cases and the raw drain
    drained: int
    #: messages sent at 100 msg/s for the latency case
    latency_messages: int
    #: messages in the backlog for the large-backlog case
    backlog: int
    #: messages the worker drains from that backlog (and from a backlog of only this many)
    backlog_window: int
    #: HTTP: requests to the trivial endpoint, and messages POSTed one per request
    http_requests: int
    #: HTTP: batches of 100 POSTed
    http_batches: int
    #: HTTP: messages pulled and acked, from a queue of only these and from the large backlog
    http_window: int


SMOKE = Mode("smoke", 1, 40, 200, 400, 400, 20, 1_000, 200, 200, 5, 200)
QUICK = Mode("quick", 3, 500, 5_000, 20_000, 10_000, 300, 20_000, 5_000, 3_000, 100, 5_000)
FULL = Mode("full", 5, 2_000, 20_000, 100_000, 50_000, 1_000, 1_000_000, 50_000, 20_000, 500, 50_000)
MODES = {mode.name: mode for mode in (SMOKE, QUICK, FULL)}

# Concurrent senders in the group-commit case and the batch size of every bulk case.
SENDERS = 100
BULK = 100
# The pace of the latency case.
LATENCY_RATE = 100.0
