"""Message headers (docs/semantics.md, "Headers"), the same on every engine in ENGINES: they travel
with the message to peek, pull and the handler, a dead letter keeps them and names its record in
them, a replay keeps them, a topic copies them to every subscription; bad headers are refused and
store nothing."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

import conveyor
from conveyor.core.ids import new_message_id
from conveyor.errors import InvalidHeaders, MessageTooLarge
from conveyor.headers import ATTEMPTS, DEAD_LETTERED_AT, ERROR, ORIGINAL_ID, SOURCE_QUEUE
from conveyor.limits import MAX_DEAD_LETTER_ERROR_HEADER_LENGTH, MAX_HEADER_KEY_LENGTH, MAX_HEADERS
from conveyor.testing import drain
from conveyor.types import DeadLetter, Settlement

TRACE = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "tenant": "ünï ✓"}


async def test_headers_travel_with_the_message_to_peek_and_pull(app: conveyor.App) -> None:
    queue = app.queue("orders")
    with_headers = await queue.send({"n": 1}, headers=TRACE)
    without = await queue.send({"n": 2})
    peeked = {m.id: m.headers for m in await queue.peek(10)}
    assert peeked == {with_headers: TRACE, without: {}}
    pulled = {m.id: m.headers for m in await queue.pull(batch_size=10)}
    assert pulled == {with_headers: TRACE, without: {}}


async def test_send_batch_takes_headers_per_message(app: conveyor.App) -> None:
    queue = app.queue("orders")
    ids = await queue.send_batch(
        [
            conveyor.SendRequest({"n": 1}, headers={"k": "one"}),
            {"n": 2},
            conveyor.SendRequest("three", content_type="text", headers={"k": "three", "x": ""}),
        ]
    )
    pulled = {m.id: m.headers for m in await queue.pull(batch_size=10)}
    assert pulled == {ids[0]: {"k": "one"}, ids[1]: {}, ids[2]: {"k": "three", "x": ""}}


async def test_a_handler_reads_headers_as_a_read_only_mapping(app: conveyor.App) -> None:
    seen: dict[Any, Any] = {}

    @app.consumer("jobs")
    async def handle(batch: conveyor.MessageBatch, env: conveyor.Env) -> None:
        for message in batch.messages:
            seen[message.body] = message.headers
            with pytest.raises(TypeError):
                message.headers["changed"] = "yes"  # type: ignore[index]

    await app.queue("jobs").send(1, headers={"a": "b"})
    await app.queue("jobs").send(2)
    await drain(app)
    assert {body: dict(headers) for body, headers in seen.items()} == {1: {"a": "b"}, 2: {}}


async def _dead_letter(app: conveyor.App, source: str, dlq: str, error: str) -> conveyor.PulledMessage:
    [pulled] = await app.queue(source).pull(batch_size=1)
    await app.core.settle(
        source,
        Settlement(dead_letters=[DeadLetter(pulled.lease_id, new_message_id(), error, dlq, pulled.attempts)]),
    )
    return pulled


async def test_a_dead_letter_keeps_its_headers_and_names_its_record_in_them(app: conveyor.App) -> None:
    await app.create_queue("jobs-dlq")
    await app.queue("jobs").send({"n": 1}, headers={"tenant": "acme"})
    error = "ValueError: " + "x" * (MAX_DEAD_LETTER_ERROR_HEADER_LENGTH * 2)
    pulled = await _dead_letter(app, "jobs", "jobs-dlq", error)
    [dead] = await app.queue("jobs-dlq").peek()
    assert dead.dead_letter is not None
    record = dead.dead_letter
    assert dead.headers == {
        "tenant": "acme",
        ORIGINAL_ID: pulled.id,
        SOURCE_QUEUE: "jobs",
        ERROR: error[:MAX_DEAD_LETTER_ERROR_HEADER_LENGTH],
        ATTEMPTS: "1",
        DEAD_LETTERED_AT: dt.datetime.fromtimestamp(record.dead_lettered_at, dt.UTC).isoformat(),
    }
    assert record.error == error  # the record keeps the whole error


async def test_a_replayed_message_keeps_its_headers_and_the_trace_of_its_dead_letter(
    app: conveyor.App,
) -> None:
    await app.create_queue("jobs-dlq")
    await app.queue("jobs").send({"n": 1}, headers={"tenant": "acmé ✓/\\", ORIGINAL_ID: "sent by the user"})
    await app.queue("jobs").send({"n": 2})
    first = await _dead_letter(app, "jobs", "jobs-dlq", "boom")
    second = await _dead_letter(app, "jobs", "jobs-dlq", "bang")
    assert await app.replay("jobs-dlq", to="jobs") == 2
    replayed = {m.body["n"]: m for m in await app.queue("jobs").pull(batch_size=10)}
    assert all(m.dead_letter is None for m in replayed.values())
    assert replayed[1].headers["tenant"] == "acmé ✓/\\"  # kept as sent through every engine's JSON
    assert replayed[1].headers[ORIGINAL_ID] == first.id  # the record's headers win over the user's
    assert replayed[2].headers[ORIGINAL_ID] == second.id
    assert {
        n: (m.headers[SOURCE_QUEUE], m.headers[ERROR], m.headers[ATTEMPTS]) for n, m in replayed.items()
    } == {
        1: ("jobs", "boom", "1"),
        2: ("jobs", "bang", "1"),
    }


async def test_a_topic_copies_headers_to_every_subscription(app: conveyor.App) -> None:
    topic = app.topic("events")
    await topic.subscribe("audit")
    await topic.subscribe("mail")
    result = await topic.publish({"type": "signup"}, headers={"k": "v"})
    assert len(result) == 2
    for queue in ("audit", "mail"):
        [message] = await app.queue(queue).pull()
        assert message.headers == {"k": "v"}


async def test_headers_count_toward_the_message_size_and_a_refused_send_stores_nothing(
    make_app: Any,
) -> None:
    app = await make_app(limits=conveyor.Limits(max_message_bytes=1_000))
    queue = app.queue("jobs")
    await queue.send("x" * 990, content_type="text")  # the body alone fits
    with pytest.raises(MessageTooLarge, match="body and headers"):
        await queue.send("x" * 990, content_type="text", headers={"key": "value"})
    with pytest.raises(MessageTooLarge):
        await app.topic("events").publish("x" * 990, content_type="text", headers={"key": "value"})
    assert (await queue.stats()).total == 1


@pytest.mark.parametrize(
    "headers",
    [
        {"k": 1},
        {1: "v"},
        {"": "v"},
        {"k": None},
        {"k" * (MAX_HEADER_KEY_LENGTH + 1): "v"},
        {f"k{n}": "v" for n in range(MAX_HEADERS + 1)},
        {"k": "\udcff"},
        [("k", "v")],
        "k=v",
    ],
    ids=[
        "int value",
        "int key",
        "empty key",
        "None value",
        "long key",
        "too many",
        "surrogate",
        "list",
        "str",
    ],
)
async def test_bad_headers_are_refused_with_a_clear_error_and_store_nothing(
    app: conveyor.App, headers: Any
) -> None:
    queue = app.queue("jobs")
    await app.create_queue("jobs")
    with pytest.raises(InvalidHeaders):
        await queue.send({"n": 1}, headers=headers)
    with pytest.raises(InvalidHeaders):
        await queue.send_batch([{"n": 0}, conveyor.SendRequest({"n": 1}, headers=headers)])
    assert (await queue.stats()).total == 0


async def test_the_header_limits_are_the_apps(make_app: Any) -> None:
    app = await make_app(limits=conveyor.Limits(max_headers=1, max_header_key_length=3))
    queue = app.queue("jobs")
    await queue.send(1, headers={"abc": "v"})
    with pytest.raises(InvalidHeaders, match="max_headers"):
        await queue.send(2, headers={"a": "v", "b": "v"})
    with pytest.raises(InvalidHeaders, match="max_header_key_length"):
        await queue.send(3, headers={"abcd": "v"})
    assert [m.headers for m in await queue.peek()] == [{"abc": "v"}]


async def test_a_deduplicated_send_keeps_the_first_messages_headers(app: conveyor.App) -> None:
    queue = app.queue("jobs")
    first = await queue.send(1, dedup_id="d", headers={"n": "first"})
    assert await queue.send(2, dedup_id="d", headers={"n": "second"}) == first
    assert [m.headers for m in await queue.peek()] == [{"n": "first"}]
