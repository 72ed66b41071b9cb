"""Any queue name, any delay, any body: taken as given, or refused with a clear conveyor error
(a ValueError subclass) that stored and created nothing. Never another exception."""

from __future__ import annotations

import asyncio
import math
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

import conveyor
from conveyor import limits as L
from conveyor.errors import BodyNotSerializable, ConveyorValueError, InvalidQueueName, LimitExceeded

names = (
    st.text(max_size=70)
    | st.from_regex(L.QUEUE_NAME_PATTERN, fullmatch=True)
    | st.integers()
    | st.none()
    | st.binary(max_size=10)
)
numbers = (
    st.floats()
    | st.integers(min_value=-(10**500), max_value=10**500)
    | st.sampled_from([10**400, -(10**400), math.nan, math.inf, -math.inf, 0, 86_400, 86_400.0001])
)
anything = numbers | st.none() | st.booleans() | st.text(max_size=5) | st.lists(st.integers(), max_size=2)
any_text = st.text(st.characters(codec=None, categories=None), max_size=8)
bodies = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | any_text | st.binary(max_size=4),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.tuples(inner, inner)
        | st.dictionaries(any_text | st.integers() | st.booleans(), inner, max_size=3)
    ),
    max_leaves=10,
)


async def _with_app(work: Any) -> Any:
    async with conveyor.App("memory://", auto_create=False) as app:
        await app.create_queue("jobs")
        return await work(app)


async def _totals(app: conveyor.App) -> dict[str, int]:
    return {info.name: (await app.queue(info.name).stats()).total for info in await app.list_queues()}


@settings(max_examples=300, deadline=None)
@given(names)
def test_any_queue_name_is_taken_or_refused_cleanly(name: Any) -> None:
    valid = isinstance(name, str) and L.QUEUE_NAME_PATTERN.fullmatch(name) is not None

    async def work(app: conveyor.App) -> None:
        try:
            app.queue(name)
            await app.create_queue(name)
        except InvalidQueueName as exc:
            assert not valid and str(exc).startswith("invalid queue name")
            assert [info.name for info in await app.list_queues()] == ["jobs"]
        except conveyor.QueueAlreadyExists:
            assert name == "jobs"
        else:
            assert valid

    asyncio.run(_with_app(work))


@settings(max_examples=300, deadline=None)
@given(anything)
def test_any_delay_is_taken_within_its_limit_or_refused_cleanly(delay: Any) -> None:
    in_range = delay is None or (
        isinstance(delay, int | float) and not isinstance(delay, bool) and 0 <= delay <= L.MAX_DELAY_SECONDS
    )

    async def work(app: conveyor.App) -> None:
        queue = app.queue("jobs")
        for send in (
            lambda: queue.send({"n": 1}, delay_seconds=delay),
            lambda: queue.send_batch([{"n": 1}], delay_seconds=delay),
            lambda: app.create_queue("other", delivery_delay=delay if delay is not None else 0),
        ):
            before = await _totals(app)
            try:
                await send()
            except LimitExceeded as exc:
                assert not in_range, exc
                assert "delay" in str(exc)
                assert await _totals(app) == before
            else:
                assert in_range, delay
            await app.delete_queue("other")

    asyncio.run(_with_app(work))


@settings(max_examples=300, deadline=None)
@given(bodies)
def test_any_body_is_sent_or_refused_cleanly(body: Any) -> None:
    async def work(app: conveyor.App) -> None:
        queue = app.queue("jobs")
        try:
            await queue.send(body)
        except (BodyNotSerializable, ConveyorValueError) as exc:
            assert isinstance(exc, ValueError)
            assert (await queue.stats()).total == 0
        else:
            (pulled,) = await queue.pull(1)
            assert pulled.body == _as_json(body)

    asyncio.run(_with_app(work))


def _as_json(value: Any) -> Any:
    """What JSON makes of `value`: tuples become lists."""
    if isinstance(value, list | tuple):
        return [_as_json(item) for item in value]
    if isinstance(value, dict):
        return {key: _as_json(item) for key, item in value.items()}
    return value
