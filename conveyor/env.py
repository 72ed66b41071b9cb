"""`env`: what a handler is given — every queue by name plus what the app's lifespan set up."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from conveyor.app import App
    from conveyor.producer import Queue


class QueueBindings(Mapping[str, "Queue"]):
    """`env.queues["name"]`: a producer handle for any queue of the app."""

    def __init__(self, app: App) -> None:
        self._app = app

    def __getitem__(self, name: str) -> Queue:
        return self._app.queue(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self._app.known_queue_names())

    def __len__(self) -> int:
        return len(self._app.known_queue_names())


class Env:
    """Bindings for handlers, like a Worker's `env`. A lifespan sets resources as attributes."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.queues = QueueBindings(app)

    def __getattr__(self, name: str) -> Any:
        raise AttributeError(f"env has no binding {name!r}: set it in the app's lifespan (env.{name} = ...)")

    def __setattr__(self, name: str, value: Any) -> None:
        # declared so that type checkers accept `env.db = ...` in a lifespan
        super().__setattr__(name, value)
