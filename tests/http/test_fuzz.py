"""Any request body, to any operation of either mount: a 2xx, or a 4xx with the error envelope of
its mount, never a 5xx; and a refused request has stored and removed nothing."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import conveyor
from conveyor.http import create_api
from tests.http.conftest import AUTH, BASE_URL, TOKEN

CLOUDFLARE = "/client/v4/accounts/local/queues"
# Every operation that takes a body, on the queue `jobs` (and `nope`, which does not exist).
OPERATIONS = [
    ("POST", "/queues"),
    ("PATCH", "/queues/{queue}"),
    ("POST", "/queues/{queue}/messages"),
    ("POST", "/queues/{queue}/messages/batch"),
    ("POST", "/queues/{queue}/messages/pull"),
    ("POST", "/queues/{queue}/messages/ack"),
    ("POST", "/queues/{queue}/messages/replay"),
    ("POST", CLOUDFLARE),
    ("PUT", CLOUDFLARE + "/{queue}"),
    ("PATCH", CLOUDFLARE + "/{queue}"),
    ("POST", CLOUDFLARE + "/{queue}/purge"),
    ("POST", CLOUDFLARE + "/{queue}/messages"),
    ("POST", CLOUDFLARE + "/{queue}/messages/batch"),
    ("POST", CLOUDFLARE + "/{queue}/messages/pull"),
    ("POST", CLOUDFLARE + "/{queue}/messages/ack"),
    ("POST", CLOUDFLARE + "/{queue}/messages/peek"),
]
KEYS = [
    "body", "content_type", "delay_seconds", "messages", "batch_size", "visibility_timeout_ms",
    "visibility_timeout", "acks", "retries", "lease_id", "name", "queue_name", "settings",
    "delivery_delay", "retention_seconds", "delivery_paused", "message_retention_period", "to", "limit",
    "delete_messages_permanently",
]  # fmt: skip

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**20), max_value=10**20)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from(["json", "text", "bytes", "v8", "jobs", "nope", "AAEC", "", "x" * 70])
    | st.text(max_size=12)
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=6), inner)
    ),
    max_leaves=12,
)
documents = st.dictionaries(st.sampled_from(KEYS), values, max_size=5)
raw_bodies = (
    documents.map(lambda document: json.dumps(document).encode())
    | values.map(lambda value: json.dumps(value).encode())
    | st.binary(max_size=64)
    | st.sampled_from([b"", b"{", b'{"body": NaN}', b'{"body": 1e400}', b'{"body": "\\ud800"}', b"null"])
)


async def exchange(method: str, path: str, raw: bytes) -> tuple[httpx.Response, int, int]:
    """The answer to one request, and the total messages of `jobs` before and after it."""
    async with conveyor.App("memory://", auto_create=False) as app:
        await app.create_queue("jobs")
        await app.create_queue("jobs-dlq")
        await app.queue("jobs").send_batch([{"n": n} for n in range(3)])
        api = create_api(app, token=TOKEN, stats_refresh_seconds=0)
        before = await _total(app)
        async with (
            api.router.lifespan_context(api),
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=api), base_url=BASE_URL, headers=AUTH
            ) as client,
        ):
            response = await client.request(method, path, content=raw)
        return response, before, await _total(app)


async def _total(app: conveyor.App) -> int:
    totals = [(await app.queue(info.name).stats()).total for info in await app.list_queues()]
    return sum(totals)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(OPERATIONS), st.sampled_from(["jobs", "nope", "jobs-dlq"]), raw_bodies)
def test_any_body_is_answered_in_the_envelope_and_a_refusal_changes_nothing(
    operation: tuple[str, str], queue: str, raw: bytes
) -> None:
    method, template = operation
    path = template.format(queue=queue)
    response, before, after = asyncio.run(exchange(method, path, raw))
    assert response.status_code < 500, (path, raw, response.text)
    document: dict[str, Any] = response.json()
    assert set(document) == {"success", "result", "errors", "messages"}
    if response.status_code < 300:
        assert document["success"] is True and document["errors"] == []
        return
    assert document["success"] is False and document["result"] is None and document["errors"]
    code_type = int if path.startswith("/client/v4/") else str
    assert all(isinstance(error["code"], code_type) and error["message"] for error in document["errors"])
    assert after == before, (path, raw, response.text)
