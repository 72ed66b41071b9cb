"""A lone send (written from its caller's task when no one else sends) keeps the core's policy:
an ambiguous write is tried again with the same ids and stored once, and an unknown queue is
created on first use or refused. On the memory engine, whose write is real; the
lost reply is injected after it."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

import conveyor
from conveyor.errors import BackendUnavailable, QueueNotFound
from conveyor.types import OutgoingMessage


async def test_a_lone_send_whose_reply_was_lost_is_written_again_with_its_id_and_stored_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with conveyor.App("memory://") as app:
        queue = app.queue("orders")
        await queue.send({"warm": "up"})
        store = app.backend.send_many
        writes: list[list[str]] = []

        async def reply_lost_once(messages: Sequence[OutgoingMessage]) -> list[str]:
            writes.append([m.id for m in messages])
            ids = await store(messages)  # the engine stored it ...
            if len(writes) == 1:
                raise BackendUnavailable("the connection broke before the reply")  # ... unheard
            return ids

        monkeypatch.setattr(app.backend, "send_many", reply_lost_once)
        message_id = await queue.send({"order": 7})
        assert writes == [[message_id], [message_id]]  # the same id both times
        monkeypatch.undo()
        assert [m.id for m in await queue.peek(10) if m.body == {"order": 7}] == [message_id]


async def test_lone_sends_create_an_unknown_queue_or_refuse_it_when_auto_create_is_off() -> None:
    async with conveyor.App("memory://") as app:
        assert await app.queue("new").send({"n": 1})
        assert [m.body for m in await app.queue("new").peek()] == [{"n": 1}]
    async with conveyor.App("memory://", auto_create=False) as app:
        with pytest.raises(QueueNotFound):
            await app.queue("nowhere").send({"n": 1})
        assert await app.list_queues() == []
