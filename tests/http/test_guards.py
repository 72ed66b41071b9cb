"""What the HTTP layer does on its own: auth, body limits, input errors, load shedding, cross-site
writes, /metrics, /healthz and the dashboard (one engine is enough: no engine is involved)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

import conveyor
from conveyor.http import create_api
from conveyor.http.body import request_limit
from tests.http.conftest import TOKEN, client_for, error_code, result

REPO = Path(__file__).resolve().parents[2]


async def backlog(app: conveyor.App, queue: str = "jobs") -> int:
    return (await app.queue(queue).stats()).backlog


# -- auth ----------------------------------------------------------------------------------------


async def test_requests_without_the_token_are_401(sqlite_app: conveyor.App) -> None:
    await sqlite_app.create_queue("jobs")
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
        async with client_for(sqlite_app, headers=headers) as client:
            response = await client.post("/queues/jobs/messages", json={"body": 1})
            assert error_code(response, 401) == "unauthorized"
            assert response.headers["www-authenticate"].startswith("Bearer")
            assert TOKEN not in response.text
    assert await backlog(sqlite_app) == 0


async def test_the_right_token_passes_as_bearer(sqlite_app: conveyor.App) -> None:
    async with client_for(sqlite_app, headers={"Authorization": f"Bearer {TOKEN}"}) as client:
        assert result(await client.get("/queues")) == []


async def test_healthz_needs_no_token(sqlite_app: conveyor.App) -> None:
    async with client_for(sqlite_app, headers={}) as client:
        assert result(await client.get("/healthz")) == {"status": "ok"}


async def test_healthz_answers_what_docs_http_md_shows(sqlite_app: conveyor.App) -> None:
    async with client_for(sqlite_app, headers={}) as client:
        response = await client.get("/healthz")
    assert response.status_code == 200
    documented = '`{"success": true, "result": {"status": "ok"}, "errors": [], "messages": []}`'
    assert documented in " ".join((REPO / "docs" / "http.md").read_text().split())
    assert response.json() == json.loads(documented.strip("`"))


async def test_the_dashboard_asks_a_browser_for_the_token(sqlite_app: conveyor.App) -> None:
    async with client_for(sqlite_app, headers={}) as client:
        response = await client.get("/")
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Basic")


async def test_without_a_token_everything_is_open(sqlite_app: conveyor.App) -> None:
    async with client_for(sqlite_app, headers={}, token=None) as client:
        assert result(await client.get("/queues")) == []


def test_an_empty_token_is_refused(sqlite_app: conveyor.App) -> None:
    with pytest.raises(ValueError, match="token"):
        create_api(sqlite_app, token="")


# -- bodies and input ------------------------------------------------------------------------------


async def test_a_body_over_the_limit_is_413_by_its_content_length(sqlite_app: conveyor.App) -> None:
    await sqlite_app.create_queue("jobs")
    limit = request_limit(sqlite_app.limits)
    async with client_for(sqlite_app) as client:
        response = await client.post(
            "/queues/jobs/messages/batch",
            content=b" " * (limit + 1),
            headers={"Content-Type": "application/json"},
        )
    assert error_code(response, 413) == "request_too_large"
    assert f"{limit:,}" in response.json()["errors"][0]["message"]
    assert await backlog(sqlite_app) == 0


async def test_a_streamed_body_over_the_limit_is_refused_without_reading_it_all(
    sqlite_app: conveyor.App,
) -> None:
    await sqlite_app.create_queue("jobs")
    limit = request_limit(sqlite_app.limits)
    chunk = b" " * 65_536
    chunks_sent = 0

    async def upload() -> AsyncIterator[bytes]:  # no Content-Length: sent chunked
        nonlocal chunks_sent
        for _ in range(100):  # 6.5 MB offered
            chunks_sent += 1
            yield chunk

    async with client_for(sqlite_app) as client:
        response = await client.post("/queues/jobs/messages/batch", content=upload())
    assert error_code(response, 413) == "request_too_large"
    assert chunks_sent <= limit // len(chunk) + 2
    assert await backlog(sqlite_app) == 0


async def test_a_body_that_is_not_json_is_400(sqlite_app: conveyor.App) -> None:
    await sqlite_app.create_queue("jobs")
    async with client_for(sqlite_app) as client:
        response = await client.post("/queues/jobs/messages", content=b"{not json")
        assert error_code(response, 400) == "invalid_input"
        assert error_code(await client.post("/queues/jobs/messages"), 400) == "invalid_input"


async def test_every_bad_field_is_named(sqlite_app: conveyor.App) -> None:
    await sqlite_app.create_queue("jobs")
    async with client_for(sqlite_app) as client:
        response = await client.post(
            "/queues/jobs/messages/pull", json={"batch_size": 101, "visibility_timeout_ms": "soon", "x": 1}
        )
    assert error_code(response, 400) == "invalid_input"
    messages = " | ".join(error["message"] for error in response.json()["errors"])
    for field in ("batch_size", "visibility_timeout_ms", "x"):
        assert field in messages


async def test_a_bytes_body_must_be_base64(sqlite_app: conveyor.App) -> None:
    await sqlite_app.create_queue("jobs")
    async with client_for(sqlite_app) as client:
        response = await client.post("/queues/jobs/messages", json={"body": "%%%", "content_type": "bytes"})
    assert error_code(response, 400) == "invalid_input"
    assert "base64" in response.json()["errors"][0]["message"]
    assert await backlog(sqlite_app) == 0


async def test_unknown_paths_and_methods_answer_in_the_envelope(sqlite_app: conveyor.App) -> None:
    async with client_for(sqlite_app) as client:
        assert error_code(await client.get("/nowhere"), 404) == "not_found"
        assert error_code(await client.put("/queues"), 405) == "method_not_allowed"


# -- cross-site writes and load shedding -----------------------------------------------------------


async def test_a_write_from_another_sites_page_is_403(sqlite_app: conveyor.App) -> None:
    await sqlite_app.create_queue("jobs")
    async with client_for(sqlite_app, token=None, headers={}) as client:
        forged = await client.post(
            "/queues/jobs/messages", json={"body": 1}, headers={"Origin": "https://evil.example"}
        )
        assert error_code(forged, 403) == "cross_origin"
        fetched = await client.post("/queues/jobs/purge", headers={"Sec-Fetch-Site": "cross-site"})
        assert error_code(fetched, 403) == "cross_origin"
        own = await client.post(
            "/queues/jobs/messages", json={"body": 1}, headers={"Origin": "http://localhost:8787"}
        )
        result(own)
    assert await backlog(sqlite_app) == 1


async def test_requests_past_the_concurrency_limit_are_429(sqlite_app: conveyor.App) -> None:
    await sqlite_app.create_queue("jobs")
    started, release = asyncio.Event(), asyncio.Event()

    async def slow_upload() -> AsyncIterator[bytes]:
        yield b'{"body": '
        started.set()  # the API asked for more: the request is in progress, holding the only slot
        await release.wait()
        yield b"1}"

    async with client_for(sqlite_app, max_concurrent_requests=1) as client:
        slow = asyncio.create_task(client.post("/queues/jobs/messages", content=slow_upload()))
        await started.wait()
        busy = await client.get("/queues")
        assert error_code(busy, 429) == "overloaded"
        assert busy.headers["retry-after"] == "1"
        assert result(await client.get("/healthz")) == {"status": "ok"}  # probes are never shed
        release.set()
        result(await slow)
        assert result(await client.get("/queues"))[0]["backlog"] == 1


# -- /metrics and the dashboard ----------------------------------------------------------------------


async def test_metrics_show_a_backlog_gauge_per_queue_and_api_counters(sqlite_app: conveyor.App) -> None:
    await sqlite_app.create_queue("jobs")
    await sqlite_app.create_queue("idle")
    async with client_for(sqlite_app) as client:
        result(
            await client.post("/queues/jobs/messages/batch", json={"messages": [{"body": 1}, {"body": 2}]})
        )
        result(await client.post("/queues/jobs/messages/pull", json={"batch_size": 1}))
        response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert "# TYPE conveyor_queue_backlog gauge" in text
    found = samples(text)
    assert found["conveyor_queue_backlog", "jobs", None] == 1
    assert found["conveyor_queue_in_flight", "jobs", None] == 1
    assert found["conveyor_queue_backlog", "idle", None] == 0
    assert found["conveyor_api_messages_total", "jobs", "send"] == 2
    assert found["conveyor_api_messages_total", "jobs", "pull"] == 1


def samples(exposition: str) -> dict[tuple[str, str | None, str | None], float]:
    """(sample name, queue label, operation label) -> value, from Prometheus' text format."""
    return {
        (sample.name, sample.labels.get("queue"), sample.labels.get("operation")): sample.value
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
    }


async def test_metrics_need_the_token(sqlite_app: conveyor.App) -> None:
    async with client_for(sqlite_app, headers={}) as client:
        assert error_code(await client.get("/metrics"), 401) == "unauthorized"


@pytest.mark.parametrize("raw", [b'{"body": NaN}', b'{"body": {"x": 1e400}}', b'{"body": [-Infinity]}'])
async def test_a_non_finite_body_is_400_and_stores_nothing(sqlite_app: conveyor.App, raw: bytes) -> None:
    await sqlite_app.create_queue("jobs")
    async with client_for(sqlite_app) as client:
        response = await client.post("/queues/jobs/messages", content=raw)
        assert error_code(response, 400) == "body_not_serializable"
        batch = await client.post(
            "/queues/jobs/messages/batch", content=b'{"messages": [{"body": 1}, %s]}' % raw
        )
        assert error_code(batch, 400) == "body_not_serializable"
    assert await backlog(sqlite_app) == 0


@pytest.mark.parametrize("number", [b"1e400", b"NaN", b"-Infinity", b"1" + b"0" * 400])
async def test_an_absurd_delay_is_limit_exceeded(sqlite_app: conveyor.App, number: bytes) -> None:
    await sqlite_app.create_queue("jobs")
    async with client_for(sqlite_app) as client:
        response = await client.post(
            "/queues/jobs/messages", content=b'{"body": 1, "delay_seconds": %s}' % number
        )
        assert error_code(response, 400) == "limit_exceeded"
    assert await backlog(sqlite_app) == 0
