"""How the harness configures the processes it starts: one frozen dataclass per role, passed as
JSON in one environment variable, so a role reads exactly what the harness meant."""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from typing import Any, Self

WORKER_ENV = "RELIABILITY_WORKER"
PRODUCER_ENV = "RELIABILITY_PRODUCER"
PULL_ENV = "RELIABILITY_PULL"
# The exit code of a worker killed by a poison message (os._exit in its handler).
POISON_EXIT_CODE = 70


class _Settings:
    def to_env(self, variable: str) -> dict[str, str]:
        return {variable: json.dumps(dataclasses.asdict(self))}  # type: ignore[call-overload]

    @classmethod
    def from_env(cls, variable: str) -> Self:
        return cls(**json.loads(os.environ[variable]))

    def but(self, **changes: Any) -> Self:
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]


@dataclass(frozen=True)
class WorkerSettings(_Settings):
    """The consumer a worker runs (reliability/roles/worker_app.py) and how its handler behaves."""

    ledger: str
    queue: str = "jobs"
    dead_letter_queue: str | None = "jobs-dlq"
    max_batch_size: int = 10
    max_batch_timeout: float = 0.05
    max_retries: int = 3
    max_concurrency: int | None = 4
    visibility_timeout: float = 2.0
    #: each batch's work: an asyncio.sleep of this long
    handler_seconds: float = 0.0
    #: how long a "block" poison holds the event loop (time.sleep inside the async handler)
    block_seconds: float = 1.5
    auto_create: bool = True
    #: also record each message as its handler starts (the `starts` ledger): which ones reached it
    record_starts: bool = False


@dataclass(frozen=True)
class ProducePlan(_Settings):
    """What one producer sends: `count` unique bodies `{"key": "<tag>-<n>"}` from n = `start`."""

    ledger: str
    queue: str = "jobs"
    tag: str = "p"
    start: int = 0
    count: int = 1_000
    #: 1: `send` one message per call; more: `send_batch` of this many
    batch: int = 10
    #: calls in flight at once
    concurrency: int = 1
    #: messages per second in all; None: as fast as the engine takes them
    rate: float | None = None
    #: [n, kind] pairs: the message n is a poison of that kind ("exit", "raise", "block")
    poison: list[tuple[int, str]] = field(default_factory=list)
    #: bytes of padding in each body
    pad_bytes: int = 0

    def poison_kinds(self) -> dict[int, str]:
        return {int(n): kind for n, kind in self.poison}


@dataclass(frozen=True)
class PullSettings(_Settings):
    """An HTTP pull consumer (reliability/roles/pull_client.py) of `conveyor serve`."""

    ledger: str
    base_url: str
    queue: str = "jobs"
    batch_size: int = 10
    visibility_timeout_ms: int = 2_000
    #: time between recording a batch as handled and acknowledging it: where a kill lands
    hold_seconds: float = 0.05
