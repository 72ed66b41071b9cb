"""The Cloudflare mount, driven by Cloudflare's official Python SDK with only its base URL and token
changed: queues, messages (push, bulk push, pull, ack with retries, peek), purge and metrics as a
Cloudflare Queues user's code calls them, on every engine."""

from __future__ import annotations

import base64
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import cloudflare
import httpx
import pytest
from cloudflare import AsyncCloudflare

import conveyor
from conveyor.http import create_api
from tests.http.conftest import AUTH, BASE_URL, TOKEN

ACCOUNT = "0123456789abcdef0123456789abcdef"


@contextlib.asynccontextmanager
async def sdk_for(app: conveyor.App, token: str = TOKEN) -> AsyncIterator[AsyncCloudflare]:
    """The official async client, talking to `create_api(app)` in process (no retries: errors show;
    figures read on every request, so they are exact: test_figures.py tests the cached ones)."""
    api = create_api(app, token=TOKEN, stats_refresh_seconds=0)
    async with (
        api.router.lifespan_context(api),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=api)) as http,
        AsyncCloudflare(
            api_token=token, base_url=f"{BASE_URL}/client/v4", http_client=http, max_retries=0
        ) as client,
    ):
        yield client


@pytest.fixture
async def sdk(api_app: conveyor.App) -> AsyncIterator[AsyncCloudflare]:
    async with sdk_for(api_app) as client:
        yield client


def decoded(message: Any) -> Any:
    """A pulled message's body as Cloudflare documents it: json and bytes arrive base64-encoded."""
    content_type = message.metadata["CF-Content-Type"]
    if content_type == "text":
        return message.body
    raw = base64.b64decode(message.body)
    return json.loads(raw) if content_type == "json" else raw


def error_number(raised: pytest.ExceptionInfo[cloudflare.APIStatusError]) -> int:
    assert raised.value.errors, raised.value.body
    code = raised.value.errors[0].code
    assert code is not None
    return code


async def test_queue_management_round_trip(sdk: AsyncCloudflare) -> None:
    created = await sdk.queues.create(account_id=ACCOUNT, queue_name="jobs")
    assert created is not None and created.queue_name == "jobs"
    assert created.queue_id is not None and len(created.queue_id) == 32
    assert created.created_on and created.settings is not None
    assert created.settings.delivery_paused is False

    listed = [queue async for queue in sdk.queues.list(account_id=ACCOUNT)]
    assert [(queue.queue_id, queue.queue_name) for queue in listed] == [(created.queue_id, "jobs")]
    by_id = await sdk.queues.get(created.queue_id, account_id=ACCOUNT)
    by_name = await sdk.queues.get("jobs", account_id=ACCOUNT)
    assert by_id == by_name and by_id is not None and by_id.queue_id == created.queue_id

    edited = await sdk.queues.edit(created.queue_id, account_id=ACCOUNT, settings={"delivery_delay": 5})
    assert edited is not None and edited.settings is not None
    assert edited.settings.delivery_delay == 5 and edited.settings.message_retention_period == 345_600
    updated = await sdk.queues.update(
        created.queue_id, account_id=ACCOUNT, settings={"message_retention_period": 3_600}
    )
    assert updated is not None and updated.settings is not None
    # PUT is not a partial update: what it leaves out takes its default
    assert (updated.settings.delivery_delay, updated.settings.message_retention_period) == (0, 3_600)

    deleted = await sdk.queues.delete(created.queue_id, account_id=ACCOUNT)
    assert deleted.success is True
    with pytest.raises(cloudflare.NotFoundError) as raised:
        await sdk.queues.get(created.queue_id, account_id=ACCOUNT)
    assert error_number(raised) == 10104


async def test_push_pull_ack_and_retry(sdk: AsyncCloudflare) -> None:
    queue = await sdk.queues.create(account_id=ACCOUNT, queue_name="jobs")
    assert queue is not None and queue.queue_id is not None
    qid = queue.queue_id
    pushed = await sdk.queues.messages.push(qid, account_id=ACCOUNT, body={"n": 1})
    assert pushed is not None and pushed.metadata is not None and pushed.metadata.metrics is not None
    assert pushed.metadata.metrics.backlog_count == 1
    await sdk.queues.messages.push(qid, account_id=ACCOUNT, body="hello", content_type="text")
    await sdk.queues.messages.bulk_push(
        qid, account_id=ACCOUNT, messages=[{"body": {"n": 2}}, {"body": "later", "content_type": "text"}]
    )

    pulled = await sdk.queues.messages.pull(
        qid, account_id=ACCOUNT, batch_size=10, visibility_timeout_ms=60_000
    )
    assert pulled is not None and pulled.messages is not None
    assert [decoded(message) for message in pulled.messages] == [{"n": 1}, "hello", {"n": 2}, "later"]
    assert all(message.attempts == 1 and message.lease_id and message.id for message in pulled.messages)
    assert all(message.timestamp_ms and message.timestamp_ms > 1.6e12 for message in pulled.messages)
    assert pulled.message_backlog_count == 4  # unacknowledged, as Cloudflare counts them
    assert pulled.metadata is not None and pulled.metadata.metrics is not None
    assert pulled.metadata.metrics.backlog_count == 4 and pulled.metadata.metrics.backlog_bytes > 0

    first, second, *rest = pulled.messages
    acked = await sdk.queues.messages.ack(
        qid,
        account_id=ACCOUNT,
        acks=[{"lease_id": message.lease_id or ""} for message in (first, *rest)],
        retries=[{"lease_id": second.lease_id or ""}],
    )
    assert acked is not None and (acked.ack_count, acked.retry_count, acked.warnings) == (3, 1, {})

    again = await sdk.queues.messages.pull(qid, account_id=ACCOUNT, batch_size=10)
    assert again is not None and again.messages is not None
    (retried,) = again.messages
    assert (retried.id, decoded(retried), retried.attempts) == (second.id, "hello", 2)

    stale = await sdk.queues.messages.ack(qid, account_id=ACCOUNT, acks=[{"lease_id": first.lease_id or ""}])
    assert stale is not None and stale.ack_count == 0
    assert stale.warnings is not None and list(stale.warnings) == [first.lease_id]


async def test_a_retry_with_a_delay_holds_the_message_back(sdk: AsyncCloudflare) -> None:
    await sdk.queues.create(account_id=ACCOUNT, queue_name="jobs")
    await sdk.queues.messages.push("jobs", account_id=ACCOUNT, body=1)
    pulled = await sdk.queues.messages.pull("jobs", account_id=ACCOUNT)
    assert pulled is not None and pulled.messages is not None
    (message,) = pulled.messages
    acked = await sdk.queues.messages.ack(
        "jobs", account_id=ACCOUNT, retries=[{"lease_id": message.lease_id or "", "delay_seconds": 3_600}]
    )
    assert acked is not None and acked.retry_count == 1
    later = await sdk.queues.messages.pull("jobs", account_id=ACCOUNT)
    assert later is not None and later.messages == []


async def test_peek_purge_and_metrics(sdk: AsyncCloudflare, api_app: conveyor.App) -> None:
    await sdk.queues.create(account_id=ACCOUNT, queue_name="jobs")
    await sdk.queues.messages.bulk_push(
        "jobs", account_id=ACCOUNT, messages=[{"body": {"n": n}} for n in range(3)], delay_seconds=0
    )
    peeked = await sdk.queues.messages.peek("jobs", account_id=ACCOUNT, batch_size=2)
    assert peeked is not None and peeked.messages is not None
    assert [decoded(message) for message in peeked.messages] == [{"n": 0}, {"n": 1}]
    assert all(message.ref for message in peeked.messages)
    assert (await api_app.queue("jobs").stats()).in_flight == 0  # peeking leases nothing

    metrics = await sdk.queues.get_metrics("jobs", account_id=ACCOUNT)
    assert metrics is not None and metrics.backlog_count == 3 and metrics.oldest_message_timestamp_ms > 0

    never = await sdk.queues.purge.status("jobs", account_id=ACCOUNT)
    assert never is not None and never.completed is None
    purged = await sdk.queues.purge.start("jobs", account_id=ACCOUNT, delete_messages_permanently=True)
    assert purged is not None and purged.queue_name == "jobs"
    status = await sdk.queues.purge.status("jobs", account_id=ACCOUNT)
    assert status is not None and status.completed == "true" and status.started_at
    assert (await api_app.queue("jobs").stats()).total == 0
    empty = await sdk.queues.get_metrics("jobs", account_id=ACCOUNT)
    assert empty is not None and (empty.backlog_count, empty.oldest_message_timestamp_ms) == (0, 0)


async def test_a_purge_must_be_confirmed(sdk: AsyncCloudflare, api_app: conveyor.App) -> None:
    await sdk.queues.create(account_id=ACCOUNT, queue_name="jobs")
    await sdk.queues.messages.push("jobs", account_id=ACCOUNT, body=1)
    with pytest.raises(cloudflare.BadRequestError) as raised:
        await sdk.queues.purge.start("jobs", account_id=ACCOUNT)
    assert error_number(raised) == 10207
    assert (await api_app.queue("jobs").stats()).total == 1


async def test_a_paused_queue_delivers_nothing(sdk: AsyncCloudflare) -> None:
    await sdk.queues.create(account_id=ACCOUNT, queue_name="jobs")
    await sdk.queues.messages.push("jobs", account_id=ACCOUNT, body=1)
    paused = await sdk.queues.edit("jobs", account_id=ACCOUNT, settings={"delivery_paused": True})
    assert paused is not None and paused.settings is not None and paused.settings.delivery_paused
    with pytest.raises(cloudflare.RateLimitError) as raised:
        await sdk.queues.messages.pull("jobs", account_id=ACCOUNT)
    assert error_number(raised) == 10252
    await sdk.queues.edit("jobs", account_id=ACCOUNT, settings={"delivery_paused": False})
    resumed = await sdk.queues.messages.pull("jobs", account_id=ACCOUNT)
    assert resumed is not None and resumed.messages is not None and len(resumed.messages) == 1


# -- errors, with Cloudflare's codes ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("push", "number"),
    [
        pytest.param({"body": "x", "content_type": "v8"}, 10203, id="v8"),
        pytest.param({"body": 1, "delay_seconds": 86_401}, 10203, id="delay-too-long"),
        pytest.param({"body": "x" * 128_001, "content_type": "text"}, 10204, id="too-large"),
    ],
)
async def test_bad_messages_are_refused_with_cloudflares_codes_and_nothing_is_stored(
    sdk: AsyncCloudflare, api_app: conveyor.App, push: dict[str, Any], number: int
) -> None:
    await sdk.queues.create(account_id=ACCOUNT, queue_name="jobs")
    with pytest.raises(cloudflare.APIStatusError) as raised:
        await sdk.queues.messages.push("jobs", account_id=ACCOUNT, **push)
    assert error_number(raised) == number
    assert 400 <= raised.value.status_code < 500
    with pytest.raises(cloudflare.APIStatusError) as batch:
        messages: list[Any] = [{"body": 1}, push]
        await sdk.queues.messages.bulk_push("jobs", account_id=ACCOUNT, messages=messages)
    assert error_number(batch) == number
    assert (await api_app.queue("jobs").stats()).total == 0


async def test_a_batch_over_100_messages_is_10206(sdk: AsyncCloudflare, api_app: conveyor.App) -> None:
    await sdk.queues.create(account_id=ACCOUNT, queue_name="jobs")
    with pytest.raises(cloudflare.BadRequestError) as raised:
        await sdk.queues.messages.bulk_push(
            "jobs", account_id=ACCOUNT, messages=[{"body": n} for n in range(101)]
        )
    assert error_number(raised) == 10206
    assert (await api_app.queue("jobs").stats()).total == 0


async def test_unknown_queues_and_routes(sdk: AsyncCloudflare) -> None:
    with pytest.raises(cloudflare.NotFoundError) as missing:
        await sdk.queues.messages.push("nope", account_id=ACCOUNT, body=1)
    assert error_number(missing) == 10104
    with pytest.raises(cloudflare.NotFoundError) as unknown_id:
        await sdk.queues.get("f" * 32, account_id=ACCOUNT)
    assert error_number(unknown_id) == 10104
    with pytest.raises(cloudflare.BadRequestError) as malformed:
        await sdk.queues.get("not a queue!", account_id=ACCOUNT)
    assert error_number(malformed) == 10107
    with pytest.raises(cloudflare.NotFoundError) as no_queue:
        await sdk.queues.consumers.get("c", account_id=ACCOUNT, queue_id="jobs")
    assert error_number(no_queue) == 10104
    with pytest.raises(cloudflare.NotFoundError) as no_route:
        await sdk.queues.subscriptions.get("s", account_id=ACCOUNT)
    assert error_number(no_route) == 7003


async def test_a_wrong_token_is_cloudflares_authentication_error(api_app: conveyor.App) -> None:
    async with sdk_for(api_app, token="wrong") as client:
        with pytest.raises(cloudflare.AuthenticationError) as raised:
            await client.queues.create(account_id=ACCOUNT, queue_name="jobs")
    assert error_number(raised) == 10000
    assert await api_app.list_queues() == []


async def test_a_duplicate_queue_is_a_conflict(sdk: AsyncCloudflare) -> None:
    await sdk.queues.create(account_id=ACCOUNT, queue_name="jobs")
    with pytest.raises(cloudflare.ConflictError):
        await sdk.queues.create(account_id=ACCOUNT, queue_name="jobs")


async def test_cloudflares_documented_request_bodies_work_as_sent(api_app: conveyor.App) -> None:
    """Unknown fields are ignored, as Cloudflare does: its pull-consumer guide's own body."""
    api = create_api(api_app, token=TOKEN)
    base = f"/client/v4/accounts/{ACCOUNT}/queues"
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=api), base_url=BASE_URL, headers=AUTH
    ) as http:
        assert (await http.post(base, json={"queue_name": "jobs", "jurisdiction": "eu"})).status_code == 200
        sent = await http.post(f"{base}/jobs/messages", json={"body": {"n": 1}, "trace": "x"})
        assert sent.status_code == 200, sent.text
        pulled = await http.post(
            f"{base}/jobs/messages/pull", json={"visibility_timeout": 10000, "batch_size": 2}
        )
        assert pulled.status_code == 200, pulled.text
        (message,) = pulled.json()["result"]["messages"]
        assert json.loads(base64.b64decode(message["body"])) == {"n": 1}
        acked = await http.post(
            f"{base}/jobs/messages/ack", json={"acks": [{"lease_id": message["lease_id"]}]}
        )
        assert acked.json()["result"] == {"ackCount": 1, "retryCount": 0, "warnings": {}}
        fractional = await http.post(f"{base}/jobs/messages/pull", json={"batch_size": 2.5})
        assert fractional.status_code == 400 and fractional.json()["errors"][0]["code"] == 10207
        for raw in (b'{"body": NaN}', b'{"body": {"x": 1e400}}'):  # httpx, and so the SDK, cannot send these
            non_finite = await http.post(f"{base}/jobs/messages", content=raw)
            assert non_finite.status_code == 400 and non_finite.json()["errors"][0]["code"] == 10207
        not_json = await http.post(f"{base}/jobs/messages", content=b"{nope")
        assert not_json.status_code == 400 and not_json.json()["errors"][0]["code"] == 10208


async def test_an_http_pull_consumer_through_the_sdks_consumer_calls(sdk: AsyncCloudflare) -> None:
    queue = await sdk.queues.create(account_id=ACCOUNT, queue_name="jobs")
    assert queue is not None and queue.queue_id is not None and queue.consumers == []
    qid = queue.queue_id
    created = await sdk.queues.consumers.create(
        qid,
        account_id=ACCOUNT,
        type="http_pull",
        dead_letter_queue="jobs-dlq",
        settings={"batch_size": 2.0, "max_retries": 1.0, "retry_delay": 0, "visibility_timeout_ms": 60_000.0},
    )
    assert created is not None and created.type == "http_pull" and created.consumer_id is not None
    assert (created.queue_name, created.dead_letter_queue) == ("jobs", "jobs-dlq")
    assert created.settings is not None
    assert (created.settings.batch_size, created.settings.max_retries, created.settings.retry_delay) == (
        2,
        1,
        0,
    )
    assert created.settings.visibility_timeout_ms == 60_000
    consumer_id = created.consumer_id
    assert await sdk.queues.consumers.get(consumer_id, account_id=ACCOUNT, queue_id=qid) == created
    assert [c async for c in sdk.queues.consumers.list(qid, account_id=ACCOUNT)] == [created]
    shown = await sdk.queues.get(qid, account_id=ACCOUNT)
    assert shown is not None and shown.consumers_total_count == 1
    # the dead-letter queue it names exists
    assert [q.queue_name async for q in sdk.queues.list(account_id=ACCOUNT)] == ["jobs", "jobs-dlq"]

    # a pull naming no batch size gets the consumer's; a retry past max_retries dead-letters
    await sdk.queues.messages.bulk_push(qid, account_id=ACCOUNT, messages=[{"body": n} for n in range(3)])
    pulled = await sdk.queues.messages.pull(qid, account_id=ACCOUNT)
    assert pulled is not None and pulled.messages is not None and len(pulled.messages) == 2
    for attempt in (1, 2):
        acked = await sdk.queues.messages.ack(
            qid, account_id=ACCOUNT, retries=[{"lease_id": m.lease_id or ""} for m in pulled.messages]
        )
        assert acked is not None and acked.retry_count == 2
        if attempt == 1:
            pulled = await sdk.queues.messages.pull(qid, account_id=ACCOUNT, batch_size=10)
            assert pulled is not None and pulled.messages is not None
            pulled.messages = [m for m in pulled.messages if m.attempts == 2]
            assert sorted(decoded(m) for m in pulled.messages) == [0, 1]
    dead = await sdk.queues.messages.peek("jobs-dlq", account_id=ACCOUNT, batch_size=10)
    assert dead is not None and dead.messages is not None
    assert sorted(decoded(m) for m in dead.messages) == [0, 1]

    # a queue has one: a second create replaces it
    again = await sdk.queues.consumers.create(
        qid, account_id=ACCOUNT, type="http_pull", settings={"batch_size": 3}
    )
    assert again is not None and again.consumer_id == consumer_id and again.settings is not None
    assert again.settings.batch_size == 3
    assert len([c async for c in sdk.queues.consumers.list(qid, account_id=ACCOUNT)]) == 1
    updated = await sdk.queues.consumers.update(
        consumer_id, account_id=ACCOUNT, queue_id=qid, type="http_pull", settings={"max_retries": 7}
    )
    assert updated is not None and updated.settings is not None and updated.settings.max_retries == 7
    assert updated.dead_letter_queue == "" and updated.settings.batch_size == 5  # the rest: defaults
    deleted = await sdk.queues.consumers.delete(consumer_id, account_id=ACCOUNT, queue_id=qid)
    assert deleted.success is True
    assert [c async for c in sdk.queues.consumers.list(qid, account_id=ACCOUNT)] == []
    with pytest.raises(cloudflare.NotFoundError) as raised:
        await sdk.queues.consumers.get(consumer_id, account_id=ACCOUNT, queue_id=qid)
    assert error_number(raised) == 10292
    with pytest.raises(cloudflare.BadRequestError):
        await sdk.queues.consumers.create(qid, account_id=ACCOUNT, type="worker", script_name="w")
