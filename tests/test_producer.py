"""The producer handle (conveyor/producer.py): typed send (`app.queue(name, schema=...)` validates
every body before anything is enqueued), and writing inside a transaction only where the engine can."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path
from typing import Annotated, Literal

import pydantic
import pytest

import conveyor
from conveyor.errors import InvalidContentType


class ClickData(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(populate_by_name=True)

    id: str
    account_id: str = pydantic.Field(alias="accountId")
    timestamp: dt.datetime


class LinkClick(pydantic.BaseModel):
    type: Literal["LINK_CLICK"]
    data: ClickData


class Signup(pydantic.BaseModel):
    type: Literal["SIGNUP"]
    email: str


class Stranger(pydantic.BaseModel):
    type: Literal["LINK_CLICK"]
    data: ClickData


Event = Annotated[LinkClick | Signup, pydantic.Field(discriminator="type")]
WHEN = dt.datetime(2024, 5, 1, 12, 30, tzinfo=dt.UTC)


def click_dict(n: int) -> dict[str, object]:
    return {"type": "LINK_CLICK", "data": {"id": f"c{n}", "accountId": "a", "timestamp": WHEN.isoformat()}}


async def typed_queue(app: conveyor.App) -> conveyor.Queue:
    await app.create_queue("events")
    return app.queue("events", schema=Event)


async def test_an_invalid_body_is_refused_with_pydantics_errors(app: conveyor.App) -> None:
    queue = await typed_queue(app)

    with pytest.raises(conveyor.MessageValidationError) as caught:
        await queue.send({"type": "LINK_CLICK", "data": {"id": "c1"}})

    error = caught.value
    assert isinstance(error, ValueError)
    assert isinstance(error, conveyor.ConveyorValueError)
    assert error.code == "message_validation_failed"
    assert {(tuple(e["loc"]), e["type"]) for e in error.errors} == {
        (("LINK_CLICK", "data", "accountId"), "missing"),
        (("LINK_CLICK", "data", "timestamp"), "missing"),
    }
    assert "queue 'events'" in str(error)
    assert (await queue.stats()).total == 0


async def test_an_unknown_type_is_refused(app: conveyor.App) -> None:
    queue = await typed_queue(app)
    with pytest.raises(conveyor.MessageValidationError) as caught:
        await queue.send({"type": "REFUND"})
    assert [e["type"] for e in caught.value.errors] == ["union_tag_invalid"]
    assert (await queue.stats()).total == 0


async def test_a_batch_with_one_invalid_body_sends_nothing(app: conveyor.App) -> None:
    queue = await typed_queue(app)
    with pytest.raises(conveyor.MessageValidationError):
        await queue.send_batch([click_dict(1), {"type": "SIGNUP"}, click_dict(2)])
    with pytest.raises(conveyor.MessageValidationError):
        await queue.send_batch([conveyor.SendRequest(click_dict(3)), conveyor.SendRequest({"type": 1})])
    assert (await queue.stats()).total == 0
    assert await queue.peek() == []


async def test_a_model_of_another_class_is_refused(app: conveyor.App) -> None:
    queue = await typed_queue(app)
    stranger = Stranger(type="LINK_CLICK", data=ClickData(id="c1", account_id="a", timestamp=WHEN))
    with pytest.raises(conveyor.MessageValidationError):
        await queue.send(stranger)
    assert (await queue.stats()).total == 0


async def test_a_typed_queue_takes_json_bodies_only(app: conveyor.App) -> None:
    queue = await typed_queue(app)
    with pytest.raises(InvalidContentType, match="has a schema"):
        await queue.send("LINK_CLICK", content_type="text")
    with pytest.raises(InvalidContentType):
        await queue.send_batch([conveyor.SendRequest(b"\x00", content_type="bytes")])
    assert (await queue.stats()).total == 0


async def test_models_and_dicts_are_sent_as_camel_case_json(app: conveyor.App) -> None:
    queue = app.queue("events", schema=Event)
    model = LinkClick(type="LINK_CLICK", data=ClickData(id="c1", account_id="a", timestamp=WHEN))

    await queue.send(model)
    await queue.send_batch([click_dict(2), Signup(type="SIGNUP", email="x@example.com")])

    bodies = [message.body for message in await queue.peek()]
    assert {"type": "SIGNUP", "email": "x@example.com"} in bodies
    clicks = sorted((b for b in bodies if b["type"] == "LINK_CLICK"), key=lambda b: b["data"]["id"])
    # JSON mode: the datetime is an ISO string; the wire uses the aliases the schema validates
    assert clicks == [
        {"type": "LINK_CLICK", "data": {"id": "c1", "accountId": "a", "timestamp": "2024-05-01T12:30:00Z"}},
        {"type": "LINK_CLICK", "data": {"id": "c2", "accountId": "a", "timestamp": "2024-05-01T12:30:00Z"}},
    ]


async def test_what_a_typed_queue_sends_a_router_accepts(app: conveyor.App) -> None:
    from conveyor.testing import drain

    router = conveyor.Router(Event)
    received: list[LinkClick] = []

    @router.on(LinkClick)
    async def on_click(event: LinkClick, env: conveyor.Env) -> None:
        received.append(event)

    app.consumer("events", dead_letter_queue="events-dlq")(router)
    model = LinkClick(type="LINK_CLICK", data=ClickData(id="c1", account_id="a", timestamp=WHEN))
    await app.queue("events", schema=Event).send(model)

    await drain(app)

    assert received == [model]
    assert await app.queue("events-dlq").peek() == []


async def test_send_sync_validates_too(app: conveyor.App) -> None:
    queue = await typed_queue(app)
    with pytest.raises(conveyor.MessageValidationError):
        await asyncio.to_thread(queue.send_sync, {"type": "SIGNUP"})
    await asyncio.to_thread(queue.send_sync, Signup(type="SIGNUP", email="x@example.com"))
    assert [message.body for message in await queue.peek()] == [{"type": "SIGNUP", "email": "x@example.com"}]


@pytest.mark.parametrize("url", ["memory://", "sqlite:///{tmp}/q.db"])
async def test_a_transaction_to_write_in_is_refused_where_the_engine_cannot_and_nothing_is_sent(
    url: str, tmp_path: Path
) -> None:
    async with conveyor.App(url.format(tmp=tmp_path)) as app:
        queue = app.queue("outbox")
        with pytest.raises(TypeError, match="connection= needs PostgreSQL"):
            await queue.send({"n": 1}, connection=object())
        with pytest.raises(TypeError, match="connection= needs PostgreSQL"):
            await app.topic("orders").publish({"type": "X"}, connection=object())
        assert await app.list_queues() == []
