"""What a worker reports as it works, for worker metrics (conveyor/metrics/). The hooks here do
nothing: a worker without metrics pays one method call per batch."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from conveyor.types import SettleResult

if TYPE_CHECKING:
    from conveyor.consumer.runner import ConsumerRunner


class ConsumerObserver:
    """Hooks the runners and the worker call on the event loop, on the hot path: an implementation
    keeps each cheap (no I/O) and never raises."""

    def started(self, runners: Sequence[ConsumerRunner]) -> None:
        """A worker began running `runners` (their queues, settings and concurrency slots)."""

    async def stopped(self, runners: Sequence[ConsumerRunner]) -> None:
        """The worker running `runners` has stopped."""

    def batch_started(self, queue: str, size: int) -> None:
        """A batch of `size` messages of `queue` went to its handler."""

    def batch_handled(self, queue: str, seconds: float, failed: bool) -> None:
        """A handler returned (or raised: `failed`) after `seconds`."""

    def settled(self, queue: str, result: SettleResult) -> None:
        """A batch's outcomes were written: acked, retried, dead-lettered, and the stale leases
        (expired before the outcome was written: lost)."""

    def renewed(self, queue: str, count: int) -> None:
        """`count` leases were renewed (those still live)."""


#: the observer of a worker without metrics
NO_OBSERVER = ConsumerObserver()
