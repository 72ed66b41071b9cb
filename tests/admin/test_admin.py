"""conveyor.admin: what the CLI, the HTTP API and the dashboard share."""

from __future__ import annotations

import pytest

import conveyor
from conveyor import admin
from conveyor.admin import dead_letters
from conveyor.errors import ConveyorValueError, QueueNotFound


async def test_replay_moves_every_dead_letter_chunk_by_chunk(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dead_letters, "REPLAY_CHUNK", 3)
    async with conveyor.App("memory://") as app:
        await app.create_queue("jobs")
        await app.queue("jobs-dlq").send_batch([{"n": n} for n in range(8)])
        seen: list[int] = []
        assert await admin.movable(app, "jobs-dlq") == 8
        assert await admin.replay(app, "jobs-dlq", "jobs", progress=seen.append) == 8
        assert seen == [3, 6, 8]
        assert (await app.queue("jobs").stats()).backlog == 8
        assert await admin.replay(app, "jobs", "jobs-dlq", limit=5) == 5


async def test_replay_refuses_an_unknown_target_and_the_queue_itself() -> None:
    async with conveyor.App("memory://") as app:
        await app.create_queue("jobs-dlq")
        with pytest.raises(QueueNotFound):
            await admin.replay(app, "jobs-dlq", "typo")
        with pytest.raises(ConveyorValueError):
            await admin.replay(app, "jobs-dlq", "jobs-dlq")


def test_a_declared_dead_letter_queue_wins_over_the_dlq_suffix() -> None:
    app = conveyor.App("memory://")

    @app.consumer("a", dead_letter_queue="failed")
    async def handle(batch: conveyor.MessageBatch, env: conveyor.Env) -> None: ...

    declared = admin.declared_dead_letter_queues(app, {"c": "c-failed"})
    assert declared == {"a": "failed", "c": "c-failed"}
    names = ["a", "a-dlq", "failed", "b", "b-dlq", "c"]
    assert admin.dead_letter_queues(names, declared) == {"a": "failed", "b": "b-dlq"}
