"""Settle policy, written once for every engine: check a batch's outcomes, build the dead-letter
records, and turn the engine's per-item statuses into a SettleResult.

A lease id that no engine of this kind could have made, or one named a second time in the same
settle (first outcome wins), is stale without reaching the engine; the engine reports which of
the others were no longer live. This runs on the event loop for every settled message, so it
allocates only the parsed lease per item.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from conveyor.backends.base import parse_lease_id
from conveyor.types import DeadLetterInfo, DeadLetterMove, Outcomes, Settlement, SettleResult


@dataclass(slots=True)
class CheckedSettlement:
    """What the engine gets (`outcomes`), with what is needed to report back on it."""

    outcomes: Outcomes
    #: the lease id of each item of `outcomes`, in its order
    named: list[str] = field(default_factory=list)
    #: lease ids refused before the engine: malformed, or named again
    refused: list[str] = field(default_factory=list)

    @property
    def dead_letter_queues(self) -> set[str]:
        return {move.queue for move in self.outcomes.dead_letters if move.queue is not None}


def check(queue: str, settlement: Settlement, *, rows: bool, now: float) -> CheckedSettlement:
    """The outcomes of `settlement` an engine may apply; `rows` is the engine's `lease_rows`,
    `now` the time written into dead-letter records."""
    checked = CheckedSettlement(Outcomes())
    outcomes, named, refused = checked.outcomes, checked.named, checked.refused
    seen: set[str] = set()
    for lease_id in settlement.acks:
        lease = None if lease_id in seen else parse_lease_id(lease_id, rows)
        if lease is None:
            refused.append(lease_id)
            continue
        seen.add(lease_id)
        outcomes.acks.append(lease)
        named.append(lease_id)
    for retry in settlement.retries:
        lease_id = retry.lease_id
        lease = None if lease_id in seen else parse_lease_id(lease_id, rows)
        if lease is None:
            refused.append(lease_id)
            continue
        seen.add(lease_id)
        outcomes.retries.append((lease, retry.delay_seconds))
        named.append(lease_id)
    for dead in settlement.dead_letters:
        lease_id = dead.lease_id
        lease = None if lease_id in seen else parse_lease_id(lease_id, rows)
        if lease is None:
            refused.append(lease_id)
            continue
        seen.add(lease_id)
        record = DeadLetterInfo(lease[0], queue, dead.attempts, dead.error, now)
        outcomes.dead_letters.append(DeadLetterMove(lease, dead.new_id, dead.dead_letter_queue, record))
        named.append(lease_id)
    return checked


def result(checked: CheckedSettlement, statuses: list[bool]) -> SettleResult:
    """The SettleResult of an engine's statuses: stale are the refused lease ids, then those the
    engine found no longer live, in the order named."""
    outcomes = checked.outcomes
    acks, retries = len(outcomes.acks), len(outcomes.retries)
    if len(statuses) != len(checked.named):
        raise RuntimeError(f"the engine returned {len(statuses)} statuses for {len(checked.named)} outcomes")
    if all(statuses):
        return SettleResult(acks, retries, len(outcomes.dead_letters), checked.refused)
    not_live = (lease_id for lease_id, live in zip(checked.named, statuses, strict=True) if not live)
    stale = [*checked.refused, *not_live]
    return SettleResult(
        sum(statuses[:acks]), sum(statuses[acks : acks + retries]), sum(statuses[acks + retries :]), stale
    )
