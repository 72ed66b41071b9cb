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

from conveyor.core.bound import past_bound, unfinished_reason
from conveyor.types import LeasedMessage

# the bound itself is shared with pulls (Queue.pull), below this layer
__all__ = ["is_suspect", "past_bound", "unfinished_reason"]


def is_suspect(message: LeasedMessage) -> bool:
    """Whether the message's last delivery ended without an outcome."""
    return message.lost > 0
