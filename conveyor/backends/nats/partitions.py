"""A partitioned queue on NATS as the backend splits and joins it: pure functions, no I/O.

A queue of N > 1 partitions is N logs (jetstream.log_name), each with its own state. A message
goes to the partition `conveyor.backends.partitioning.place` names; a lease's token names the
partition its record was written to (a `p<k>` suffix: tokens are hex, so it cannot be mistaken),
so an ack, a retry, a renewal or a release goes to that log alone; the results of the logs an
operation touched are put back together in the order the caller gave.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from typing import TypeVar

from conveyor.backends.base import new_token
from conveyor.backends.nats.records import Outgoing
from conveyor.backends.partitioning import place
from conveyor.types import Lease, Outcomes, QueueStats

T = TypeVar("T")

#: a lease token's partition suffix: "<token>p<k>" (partition 0 has none)
TOKEN_MARK = "p"
#: a batch's messages sent into a partitioned queue carry their send time from the sender's
#: clock, this far apart in batch order, so that peek merges the partitions in send order
SEND_ORDER_STEP_SECONDS = 1e-6


def lease_token(partition: int, handed: bool = True) -> str:
    """A new lease token for a lease record in `partition`'s log."""
    token = new_token(handed)
    return token if partition == 0 else f"{token}{TOKEN_MARK}{partition}"


def token_partition(token: str, partitions: int) -> int | None:
    """The partition a lease token was made for; None when it names none of the queue's (a lease
    id made up or of another queue: stale)."""
    head, mark, index = token.rpartition(TOKEN_MARK)
    if not mark or not head or not index.isdigit():
        return 0
    partition = int(index)
    return partition if 0 < partition < partitions else None


def partition_of(message: Outgoing, partitions: int) -> int:
    return place(message.group, message.dedup_id, message.id, partitions)


def split(messages: Sequence[Outgoing], partitions: int) -> dict[int, list[Outgoing]]:
    """Messages by the partition each goes to, each partition's in the order given."""
    parts: dict[int, list[Outgoing]] = {}
    for message in messages:
        parts.setdefault(partition_of(message, partitions), []).append(message)
    return parts


def stamped(messages: Sequence[Outgoing], now: float | None = None) -> list[Outgoing]:
    """Messages with their send time set where they have none, in batch order (see
    SEND_ORDER_STEP_SECONDS); a message that keeps an earlier send time (a replay) keeps it."""
    start = time.time() if now is None else now
    return [
        m
        if m.timestamp is not None
        else dataclasses.replace(m, timestamp=start + i * SEND_ORDER_STEP_SECONDS)
        for i, m in enumerate(messages)
    ]


@dataclasses.dataclass
class Split:
    """One partition's share of a batch of outcomes, and where each of its statuses goes."""

    outcomes: Outcomes = dataclasses.field(default_factory=Outcomes)
    positions: list[int] = dataclasses.field(default_factory=list)


def split_outcomes(outcomes: Outcomes, partitions: int) -> tuple[dict[int, Split], int]:
    """Outcomes by partition, from their lease tokens, and how many statuses there are in all; an
    outcome whose token names no partition of the queue is in none (its status stays False)."""
    parts: dict[int, Split] = {}
    position = 0

    def part(lease: Lease) -> Split | None:
        partition = token_partition(lease[1], partitions)
        return None if partition is None else parts.setdefault(partition, Split())

    # a partition's statuses come back acks, then retries, then dead letters: fill in that order
    for lease in outcomes.acks:
        if (found := part(lease)) is not None:
            found.outcomes.acks.append(lease)
            found.positions.append(position)
        position += 1
    for retry in outcomes.retries:
        if (found := part(retry[0])) is not None:
            found.outcomes.retries.append(retry)
            found.positions.append(position)
        position += 1
    for move in outcomes.dead_letters:
        if (found := part(move.lease)) is not None:
            found.outcomes.dead_letters.append(move)
            found.positions.append(position)
        position += 1
    return parts, position


def split_leases(leases: Sequence[Lease], partitions: int) -> dict[int, tuple[list[Lease], list[int]]]:
    """Leases by partition with their positions; a lease naming no partition of the queue is left out."""
    parts: dict[int, tuple[list[Lease], list[int]]] = {}
    for position, lease in enumerate(leases):
        partition = token_partition(lease[1], partitions)
        if partition is not None:
            found = parts.setdefault(partition, ([], []))
            found[0].append(lease)
            found[1].append(position)
    return parts


def joined(count: int, results: Sequence[tuple[Sequence[int], Sequence[T]]], missing: T) -> list[T]:
    """Per-partition results put back at their positions; `missing` where no partition answered."""
    out: list[T] = [missing] * count
    for positions, values in results:
        for position, value in zip(positions, values, strict=True):
            out[position] = value
    return out


def rotation(start: int, partitions: int) -> list[int]:
    """Every partition once, from `start` on: where each lease begins turns, so every partition
    gets its turn at the front of a batch."""
    first = start % partitions
    return [*range(first, partitions), *range(first)]


def total_stats(queue: str, stats: Sequence[QueueStats]) -> QueueStats:
    """One queue's figures from its partitions': counts and bytes add up, the oldest is the
    oldest of all, paused as its first partition (they all follow the queue's settings)."""
    return QueueStats(
        queue,
        sum(s.backlog for s in stats),
        sum(s.delayed for s in stats),
        sum(s.in_flight for s in stats),
        max(s.oldest_age_seconds for s in stats),
        sum(s.bytes for s in stats),
        stats[0].paused,
    )
