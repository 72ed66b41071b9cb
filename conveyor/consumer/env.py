"""`env`: what a handler is given — every queue by name plus what the app's lifespan set up."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from conveyor.core import Core
from conveyor.producer import Queue

if TYPE_CHECKING:
    from conveyor.consumer.spec import ConsumerSpec


class QueueBindings(Mapping[str, Queue]):
    """`env.queues["name"]`: a producer handle for any queue; iterating names the queues this
    process knows (created or used, and every consumer's)."""

    def __init__(self, core: Core, consumers: Sequence[ConsumerSpec]) -> None:
        self._core = core
        self._consumers = consumers

    def __getitem__(self, name: str) -> Queue:
        return Queue(self._core, name)

    def names(self) -> list[str]:
        return sorted(self._core.known_queues | {spec.queue for spec in self._consumers})

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())


class Env:
    """Bindings for handlers, like a Worker's `env`. A lifespan sets resources as attributes."""

    def __init__(self, core: Core, consumers: Sequence[ConsumerSpec] = ()) -> None:
        self.queues = QueueBindings(core, consumers)

    def __getattr__(self, name: str) -> Any:
        raise AttributeError(f"env has no binding {name!r}: set it in the app's lifespan (env.{name} = ...)")

    def __setattr__(self, name: str, value: Any) -> None:
        # declared so that type checkers accept `env.db = ...` in a lifespan
        super().__setattr__(name, value)
