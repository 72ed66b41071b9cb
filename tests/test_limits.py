"""Every bound in README's limits table is a field of `Limits`, and every check reads the App's
Limits: an App with tighter limits refuses each value, naming the limit, and changes nothing."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

import conveyor
from conveyor.testing import drain

# Tighter than the defaults, but not than the consumer defaults (a consumer that names no
# max_batch_size still gets 10; the default backoff cap is 300 s): each case fails for one value.
TIGHT = conveyor.Limits(
    max_message_bytes=100,
    max_batch_messages=3,
    max_batch_bytes=200,
    max_delay_seconds=400,
    min_retention_seconds=120,
    max_retention_seconds=3_600,
    max_batch_size=10,
    max_batch_timeout=6,
    max_retries=4,
    min_visibility_timeout=1,
    max_visibility_timeout=60,
    max_concurrency=3,
    max_handler_timeout=30,
)


async def _handler(batch: conveyor.MessageBatch, env: conveyor.Env) -> None:
    pass


def consumer(**options: Any) -> Callable[[conveyor.App], Awaitable[object]]:
    async def register(app: conveyor.App) -> object:
        return app.consumer("jobs", **options)(_handler)

    return register


CASES: dict[str, tuple[str, Callable[[conveyor.App], Awaitable[object]]]] = {
    "message size": ("max_message_bytes", lambda app: app.queue("jobs").send("x" * 200)),
    "batch count": ("max_batch_messages", lambda app: app.queue("jobs").send_batch([1, 2, 3, 4])),
    "batch bytes": ("max_batch_bytes", lambda app: app.queue("jobs").send_batch(["x" * 90] * 3)),
    "send delay": ("delay_seconds", lambda app: app.queue("jobs").send(1, delay_seconds=500)),
    "delivery delay": (
        "delivery_delay",
        lambda app: app.create_queue("other", delivery_delay=500, retention_seconds=600),
    ),
    "short retention": ("retention_seconds", lambda app: app.create_queue("other", retention_seconds=60)),
    "long retention": ("retention_seconds", lambda app: app.create_queue("other", retention_seconds=7_200)),
    "pull batch size": ("batch_size", lambda app: app.queue("jobs").pull(batch_size=11)),
    "pull lease too short": (
        "visibility_timeout",
        lambda app: app.queue("jobs").pull(visibility_timeout=0.5),
    ),
    "pull lease too long": ("visibility_timeout", lambda app: app.queue("jobs").pull(visibility_timeout=61)),
    "pull retry delay": ("delay_seconds", lambda app: app.queue("jobs").ack(retries=[("lease", 500)])),
    "retry_delay": ("retry_delay", consumer(retry_delay=500)),
    "max_batch_size": ("max_batch_size", consumer(max_batch_size=11)),
    "max_batch_timeout": ("max_batch_timeout", consumer(max_batch_timeout=7)),
    "max_retries": ("max_retries", consumer(max_retries=5)),
    "consumer lease": ("visibility_timeout", consumer(visibility_timeout=61)),
    "max_concurrency": ("max_concurrency", consumer(max_concurrency=4)),
    "timeout": ("timeout", consumer(timeout=31)),
    "backoff base": ("retry_backoff_base", consumer(retry_backoff="exponential", retry_backoff_base=500)),
    "backoff cap": ("retry_backoff_cap", consumer(retry_backoff="exponential", retry_backoff_cap=500)),
}


@pytest.mark.parametrize("case", list(CASES))
async def test_an_app_with_tighter_limits_refuses_each_value_past_them(case: str) -> None:
    limit, action = CASES[case]
    async with conveyor.App("memory://", limits=TIGHT) as app:
        await app.create_queue("jobs", retention_seconds=3_600)
        with pytest.raises(conveyor.LimitExceeded) as raised:
            await action(app)
        assert raised.value.limit == limit or limit in str(raised.value)
        assert (await app.queue("jobs").stats()).total == 0
        assert [queue.name for queue in await app.list_queues()] == ["jobs"]
        assert app.consumers == []


@pytest.mark.parametrize("case", list(CASES))
async def test_the_same_values_pass_with_the_default_limits(case: str) -> None:
    # proves each case above fails because of the tighter Limits, not for another reason
    _, action = CASES[case]
    async with conveyor.App("memory://") as app:
        await app.create_queue("jobs")
        await action(app)


async def test_a_handler_retry_delay_past_the_apps_limit_is_refused() -> None:
    refused: list[BaseException] = []
    async with conveyor.App("memory://", limits=TIGHT) as app:

        @app.consumer("jobs")
        async def handle(batch: conveyor.MessageBatch, env: conveyor.Env) -> None:
            for message in batch.messages:
                try:
                    message.retry(delay_seconds=500)
                except conveyor.LimitExceeded as exc:
                    refused.append(exc)
                    message.ack()

        await app.queue("jobs").send(1)
        await drain(app)
    assert len(refused) == 1
    assert "delay_seconds is 500; it must be between 0 and 400" in str(refused[0])


async def test_looser_limits_allow_values_past_the_defaults() -> None:
    loose = conveyor.Limits(max_batch_size=200, max_delay_seconds=172_800, max_retries=500)
    async with conveyor.App("memory://", limits=loose) as app:
        app.consumer("jobs", max_batch_size=150, retry_delay=100_000, max_retries=300)(_handler)
        await app.queue("jobs").send(1, delay_seconds=100_000)
    assert app.consumers[0].max_batch_size == 150


def test_limits_has_a_field_for_every_bound_in_the_readme_table() -> None:
    fields = {field.name for field in dataclasses.fields(conveyor.Limits)}
    assert fields >= {
        "max_message_bytes",
        "max_batch_messages",
        "max_batch_bytes",
        "max_delay_seconds",
        "max_batch_size",
        "max_batch_timeout",
        "max_retries",
        "min_retention_seconds",
        "max_retention_seconds",
        "min_visibility_timeout",
        "max_visibility_timeout",
        "max_concurrency",
        "max_handler_timeout",
    }


@pytest.mark.parametrize(
    "options",
    [
        {"max_batch_size": -1},
        {"max_delay_seconds": float("nan")},
        {"max_retries": "3"},
        {"min_visibility_timeout": 100, "max_visibility_timeout": 10},
    ],
)
def test_limits_that_make_no_sense_are_refused(options: dict[str, Any]) -> None:
    with pytest.raises(conveyor.LimitExceeded, match="Limits"):
        conveyor.Limits(**options)
