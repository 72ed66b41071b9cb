"""Bodies are finite JSON that reads back as sent, and every number a user passes is checked
against its limit: what JSON cannot carry (NaN, ±Infinity, non-string keys, lone surrogates)
and absurd numbers (10**400, NaN, Infinity) get a clear ValueError subclass and store nothing,
on every engine."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import conveyor
from conveyor.codec import encode_body, encode_json
from conveyor.errors import BodyNotSerializable, ConveyorValueError, LimitExceeded
from conveyor.producer import Queue

NOT_FINITE_JSON = [
    pytest.param({"x": math.nan}, "NaN", id="nan"),
    pytest.param({"x": [1.0, math.inf]}, "Infinity", id="infinity"),
    pytest.param(-math.inf, "Infinity", id="minus-infinity"),
    pytest.param({"x": float("1e400")}, "Infinity", id="1e400"),
    pytest.param({1: "a", "1": "b"}, "keys must be strings", id="int-and-str-key"),
    pytest.param({"a": {1: "a"}}, "keys must be strings", id="nested-int-key"),
    pytest.param({(1, 2): "a"}, "keys must be strings", id="tuple-key"),
    pytest.param({"x": "a\ud800b"}, "lone surrogate", id="surrogate-value"),
    pytest.param({"\udfff": 1}, "lone surrogate", id="surrogate-key"),
    pytest.param({"raw": [b"abc"]}, "is bytes", id="nested-bytes"),
]


@pytest.mark.parametrize(("body", "named"), NOT_FINITE_JSON)
async def test_send_refuses_what_json_cannot_carry_and_stores_nothing(
    app: conveyor.App, body: Any, named: str
) -> None:
    await app.create_queue("jobs")
    queue = app.queue("jobs")
    with pytest.raises(BodyNotSerializable, match=named) as raised:
        await queue.send(body)
    assert isinstance(raised.value, ValueError) and isinstance(raised.value, TypeError)
    with pytest.raises(BodyNotSerializable, match=named):
        await queue.send_batch([{"fine": 1}, body])
    with pytest.raises(BodyNotSerializable, match=named):
        await queue.send_batch([{"fine": 1}, conveyor.SendRequest(body)])
    assert (await queue.stats()).total == 0


async def test_a_lone_surrogate_in_a_text_body_is_refused(app: conveyor.App) -> None:
    await app.create_queue("jobs")
    queue = app.queue("jobs")
    with pytest.raises(BodyNotSerializable, match="lone surrogate"):
        await queue.send("ok \ud83d", content_type="text")
    assert (await queue.stats()).total == 0


async def test_finite_json_reads_back_as_sent(app: conveyor.App) -> None:
    await app.create_queue("jobs")
    body = {"big": 10**30, "small": -1.5e-300, "max": 1.7976931348623157e308, "text": "é ✓ 😀", "none": None}
    await app.queue("jobs").send(body)
    (pulled,) = await app.queue("jobs").pull(1)
    assert pulled.body == body


# -- numbers outside their limits ------------------------------------------------------------------

ABSURD = [10**400, -(10**400), math.nan, math.inf, -math.inf]
NUMERIC_ARGUMENTS: list[tuple[str, Callable[[conveyor.App, Queue, Any], Awaitable[object]]]] = [
    ("send delay_seconds", lambda app, q, v: q.send({"n": 1}, delay_seconds=v)),
    ("send_batch delay_seconds", lambda app, q, v: q.send_batch([{"n": 1}], delay_seconds=v)),
    ("SendRequest delay_seconds", lambda app, q, v: q.send_batch([conveyor.SendRequest({"n": 1}, v)])),
    ("pull batch_size", lambda app, q, v: q.pull(v)),
    ("pull visibility_timeout", lambda app, q, v: q.pull(1, v)),
    ("ack retry delay", lambda app, q, v: q.ack(retries=[("lease", v)])),
    ("peek limit", lambda app, q, v: q.peek(v)),
    ("create_queue delivery_delay", lambda app, q, v: app.create_queue("other", delivery_delay=v)),
    ("create_queue retention_seconds", lambda app, q, v: app.create_queue("other", retention_seconds=v)),
    ("update_queue delivery_delay", lambda app, q, v: app.update_queue("jobs", delivery_delay=v)),
    ("update_queue retention_seconds", lambda app, q, v: app.update_queue("jobs", retention_seconds=v)),
    ("replay limit", lambda app, q, v: app.replay("jobs", to="jobs2", limit=v)),
]


@pytest.mark.parametrize(("what", "call"), NUMERIC_ARGUMENTS, ids=[what for what, _ in NUMERIC_ARGUMENTS])
async def test_absurd_numbers_get_the_limit_error_and_change_nothing(
    app: conveyor.App, what: str, call: Callable[[conveyor.App, Queue, Any], Awaitable[object]]
) -> None:
    await app.create_queue("jobs")
    queue = app.queue("jobs")
    before = await app.get_queue("jobs")
    for value in ABSURD:
        with pytest.raises(LimitExceeded) as raised:
            await call(app, queue, value)
        assert isinstance(raised.value, ValueError)
        assert "digits" in str(raised.value) or str(value) in str(raised.value)
    assert [info.name for info in await app.list_queues()] == ["jobs"]
    assert await app.get_queue("jobs") == before
    assert (await queue.stats()).total == 0


def test_consumer_and_event_bus_settings_refuse_absurd_numbers() -> None:
    app = conveyor.App("memory://")
    value: Any
    for value in ABSURD:
        for option in (
            "max_batch_size",
            "max_batch_timeout",
            "max_retries",
            "retry_delay",
            "max_concurrency",
        ):
            with pytest.raises(LimitExceeded, match=option):
                options: dict[str, Any] = {option: value}
                app.consumer("q", **options)
        with pytest.raises(LimitExceeded, match="maxsize"):
            conveyor.EventBus(maxsize=value)


# -- the encoder, property-based -------------------------------------------------------------------

# Every character, lone surrogates included (hypothesis leaves them out by default).
any_text = st.text(st.characters(codec=None, categories=None), max_size=8)
scalars = st.none() | st.booleans() | st.integers() | st.floats() | any_text
json_like = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            any_text | st.integers() | st.booleans() | st.floats(allow_nan=False), inner, max_size=4
        )
    ),
    max_leaves=20,
)


def faithful(value: Any) -> bool:
    """The oracle: JSON carries `value` as it is (checked independently of conveyor's encoder)."""
    if isinstance(value, bytes):
        return False
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, str):
        return not any(0xD800 <= ord(char) <= 0xDFFF for char in value)
    if isinstance(value, list):
        return all(faithful(item) for item in value)
    if isinstance(value, dict):
        return all(isinstance(key, str) and faithful(key) and faithful(item) for key, item in value.items())
    return True


@settings(max_examples=400, deadline=None)
@given(json_like)
def test_the_encoder_keeps_exactly_what_json_carries_faithfully(value: Any) -> None:
    import json

    if faithful(value):
        data = encode_json(value)
        assert json.loads(data) == value  # the standard parser reads it back unchanged
    else:
        with pytest.raises(BodyNotSerializable) as raised:
            encode_json(value)
        assert isinstance(raised.value, ConveyorValueError)
        assert str(raised.value).startswith("body")


@settings(max_examples=200, deadline=None)
@given(any_text)
def test_text_bodies_are_kept_unless_they_are_not_utf8(text: str) -> None:
    if faithful(text):
        assert encode_body(text, "text").decode() == text
    else:
        with pytest.raises(BodyNotSerializable, match="lone surrogate"):
            encode_body(text, "text")
