"""Flow control over HTTP on every engine: long-poll pulls (`wait_ms`, native and Cloudflare
shaped), lease extension, and a server shutting down answering its waiting pulls (issue 32)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest

import conveyor
from conveyor.http import create_api
from conveyor.http.server import bind, make_server
from tests.http.conftest import error_code, result
from tests.support.apps import TimeMachine

CLOUDFLARE = "/client/v4/accounts/0123456789abcdef0123456789abcdef/queues"


async def test_a_long_poll_pull_returns_as_soon_as_a_message_is_sent(client: httpx.AsyncClient) -> None:
    result(await client.post("/queues", json={"name": "jobs"}), 201)
    pulling = asyncio.create_task(client.post("/queues/jobs/messages/pull", json={"wait_ms": 20_000}))
    await asyncio.sleep(0.1)
    assert not pulling.done()
    result(await client.post("/queues/jobs/messages", json={"body": {"n": 1}}))
    async with asyncio.timeout(10):
        pulled = result(await pulling)
    assert [m["body"] for m in pulled["messages"]] == [{"n": 1}]


async def test_a_long_poll_pull_answers_empty_at_its_deadline(client: httpx.AsyncClient) -> None:
    result(await client.post("/queues", json={"name": "jobs"}), 201)
    async with asyncio.timeout(10):
        pulled = result(await client.post("/queues/jobs/messages/pull", json={"wait_ms": 300}))
    assert pulled["messages"] == []


@pytest.mark.parametrize("wait_ms", [-1, 20_001, 1.5, "10"])
async def test_a_wait_ms_outside_its_limit_is_refused(client: httpx.AsyncClient, wait_ms: Any) -> None:
    result(await client.post("/queues", json={"name": "jobs"}), 201)
    response = await client.post("/queues/jobs/messages/pull", json={"wait_ms": wait_ms})
    assert error_code(response, 400) == "invalid_input"


async def test_the_cloudflare_pull_long_polls_too(client: httpx.AsyncClient) -> None:
    result(await client.post("/queues", json={"name": "jobs"}), 201)
    pulling = asyncio.create_task(client.post(f"{CLOUDFLARE}/jobs/messages/pull", json={"wait_ms": 20_000}))
    await asyncio.sleep(0.1)
    assert not pulling.done()
    result(await client.post("/queues/jobs/messages", json={"body": "hello", "content_type": "text"}))
    async with asyncio.timeout(10):
        pulled = result(await pulling)
    assert [m["body"] for m in pulled["messages"]] == ["hello"]


async def test_an_extended_lease_outlives_its_first_timeout(
    client: httpx.AsyncClient, time_machine: TimeMachine
) -> None:
    result(await client.post("/queues", json={"name": "jobs"}), 201)
    result(await client.post("/queues/jobs/messages", json={"body": {"n": 1}}))
    [message] = result(await client.post("/queues/jobs/messages/pull", json={"visibility_timeout_ms": 500}))[
        "messages"
    ]
    extended = result(
        await client.post(
            "/queues/jobs/messages/extend",
            json={
                "leases": [
                    {"lease_id": message["lease_id"], "visibility_timeout_ms": 30_000},
                    {"lease_id": "unknown.lease", "visibility_timeout_ms": 1_000},
                ]
            },
        )
    )
    assert extended["extended_count"] == 1
    assert len(extended["warnings"]) == 1 and "unknown.lease" in extended["warnings"][0]
    await time_machine.advance(0.8)
    assert result(await client.post("/queues/jobs/messages/pull", json={}))["messages"] == []
    acked = result(
        await client.post("/queues/jobs/messages/ack", json={"acks": [{"lease_id": message["lease_id"]}]})
    )
    assert acked["ack_count"] == 1


async def test_extend_in_a_missing_queue_is_404(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/queues/nowhere/messages/extend",
        json={"leases": [{"lease_id": "a.b", "visibility_timeout_ms": 1000}]},
    )
    assert error_code(response, 404) == "queue_not_found"


async def test_a_server_shutting_down_answers_its_waiting_pulls_at_once(sqlite_app: conveyor.App) -> None:
    await sqlite_app.create_queue("jobs")
    sock = bind("127.0.0.1", 0)
    server = make_server(create_api(sqlite_app, token=None), log_level="warning")
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    try:
        async with httpx.AsyncClient(base_url=base, timeout=60) as http:
            pulling = asyncio.create_task(http.post("/queues/jobs/messages/pull", json={"wait_ms": 20_000}))
            await asyncio.sleep(0.5)
            assert not pulling.done()
            started = time.monotonic()
            server.should_exit = True
            response = await asyncio.wait_for(pulling, 30)
            await asyncio.wait_for(serving, 30)
            # answered as the server stopped, not at its 20 s deadline (tolerant of a loaded machine)
            assert time.monotonic() - started < 10
        assert result(response)["messages"] == []
    finally:
        server.should_exit = True
        sock.close()


async def test_a_pull_after_the_api_stopped_answers_at_once(sqlite_app: conveyor.App) -> None:
    await sqlite_app.create_queue("jobs")
    api = create_api(sqlite_app, token=None)
    api.state.long_polls.stop()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=api), base_url="http://localhost") as http:
        async with asyncio.timeout(5):
            response = await http.post("/queues/jobs/messages/pull", json={"wait_ms": 20_000})
    assert result(response)["messages"] == []


# -- bounded backlog ----------------------------------------------------------------------------


async def test_a_send_to_a_full_queue_is_429_with_retry_after_and_stores_nothing(
    client: httpx.AsyncClient,
) -> None:
    created = result(await client.post("/queues", json={"name": "jobs", "max_backlog_messages": 2}), 201)
    assert (created["max_backlog_messages"], created["max_backlog_bytes"]) == (2, None)
    result(await client.post("/queues/jobs/messages", json={"body": 1}))
    batch = {"messages": [{"body": 2}, {"body": 3}]}
    response = await client.post("/queues/jobs/messages/batch", json=batch)
    assert error_code(response, 429) == "queue_full"
    assert response.headers["retry-after"] == "1"
    assert "max_backlog_messages" in response.json()["errors"][0]["message"]
    assert result(await client.get("/queues/jobs"))["backlog"] == 1  # nothing of the batch stored
    result(await client.post("/queues/jobs/messages", json={"body": 2}))  # what fits goes in
    assert error_code(await client.post("/queues/jobs/messages", json={"body": 3}), 429) == "queue_full"


async def test_the_cloudflare_push_to_a_full_queue_is_429_with_cloudflares_code(
    client: httpx.AsyncClient,
) -> None:
    result(await client.post("/queues", json={"name": "jobs", "max_backlog_bytes": 10}), 201)
    response = await client.post(
        f"{CLOUDFLARE}/jobs/messages", json={"body": "x" * 11, "content_type": "text"}
    )
    assert response.status_code == 429 and response.headers["retry-after"] == "1"
    assert response.json()["errors"][0]["code"] == 10251  # QueueStorageLimitExceeded


async def test_backlog_limits_are_changed_and_removed_over_http(client: httpx.AsyncClient) -> None:
    result(await client.post("/queues", json={"name": "jobs"}), 201)
    changed = result(
        await client.patch("/queues/jobs", json={"max_backlog_messages": 5, "max_backlog_bytes": 99})
    )
    assert (changed["max_backlog_messages"], changed["max_backlog_bytes"]) == (5, 99)
    removed = result(await client.patch("/queues/jobs", json={"max_backlog_bytes": 0}))
    assert (removed["max_backlog_messages"], removed["max_backlog_bytes"]) == (5, None)
    response = await client.post("/queues", json={"name": "bad", "max_backlog_messages": 0})
    assert error_code(response, 400) == "invalid_input"
