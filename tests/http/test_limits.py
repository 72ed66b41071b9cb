"""The HTTP API checks values against the App's own Limits, not only the default ones."""

from __future__ import annotations

import conveyor
from tests.http.conftest import client_for, error_code

TIGHT = conveyor.Limits(max_batch_size=10, max_visibility_timeout=60, max_delay_seconds=400)


async def test_an_app_with_tighter_limits_refuses_past_them_over_http() -> None:
    async with conveyor.App("memory://", limits=TIGHT) as app:
        await app.create_queue("jobs")
        async with client_for(app) as client:
            pull = "/queues/jobs/messages/pull"
            assert error_code(await client.post(pull, json={"batch_size": 11}), 400) == "limit_exceeded"
            assert (
                error_code(await client.post(pull, json={"visibility_timeout_ms": 61_000}), 400)
                == "limit_exceeded"
            )
            send = {"body": 1, "delay_seconds": 500}
            assert error_code(await client.post("/queues/jobs/messages", json=send), 400) == "limit_exceeded"
        assert (await app.queue("jobs").stats()).total == 0
