"""Deliveries without an outcome: which leased messages are suspects, which are past the bound,
and the error a message past the bound is dead-lettered with (docs/semantics.md, "Deliveries
without an outcome").

A delivery ends without an outcome when its lease expires: the worker died (SIGKILL, `os._exit`,
a segfault, the OOM killer) or lost the lease (an event loop blocked, or a handler past the
visibility timeout). The engine counts those per message (`LeasedMessage.lost`); the runner hands
a suspect (lost > 0) to the handler alone, one suspect at a time, so that a crash convicts only
the message that caused it, and dead-letters a message at lease time once it has been delivered
`max_retries + 1` times, whatever ended those deliveries.
"""

from __future__ import annotations

from conveyor.types import LeasedMessage


def is_suspect(message: LeasedMessage) -> bool:
    """Whether the message's last delivery ended without an outcome."""
    return message.lost > 0


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
