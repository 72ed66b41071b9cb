"""The bound on deliveries, written once for the consumer runtime and for pulls: a message leased
again after `max_retries + 1` deliveries goes to the dead-letter queue at lease time, whatever
ended those deliveries (docs/semantics.md, "Deliveries without an outcome")."""

from __future__ import annotations

from conveyor.types import LeasedMessage


def past_bound(message: LeasedMessage, max_retries: int) -> bool:
    """Whether this lease would be a delivery past `max_retries + 1`: the message goes to the
    dead-letter queue instead of a handler."""
    return message.attempts > max_retries + 1


def unfinished_reason(message: LeasedMessage) -> str:
    """The error of a message dead-lettered at lease time: how often it was delivered and how
    many of those deliveries, the last ones, ended without an outcome."""
    delivered = message.attempts - 1
    lost = min(message.lost, delivered)
    cause = f"the worker handling it exited or lost its lease {lost} time{'s' if lost != 1 else ''}"
    if lost >= delivered:
        return f"delivered {delivered} times without an outcome: {cause}"
    return f"delivered {delivered} times, the last {lost} without an outcome: {cause}"
