"""What keeps the API safe to run on a developer's machine and on a network: the Host allow-list
(DNS rebinding), strict bearer tokens, no tokens in URLs, headers against framing, and time
limits on slow clients (one engine is enough: no engine is involved)."""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import AsyncIterator

import pytest

import conveyor
from tests.http.conftest import TOKEN, client_for, error_code, result


async def queue_names(app: conveyor.App) -> list[str]:
    return [info.name for info in await app.list_queues()]


# -- Host allow-list --------------------------------------------------------------------------------


async def test_a_dns_rebinding_request_is_refused_on_a_tokenless_loopback_server(
    sqlite_app: conveyor.App,
) -> None:
    """What a browser sends after evil.example was re-pointed at 127.0.0.1: same-origin to it."""
    await sqlite_app.create_queue("x")
    rebinding = {
        "Host": "evil.example:8787",
        "Origin": "http://evil.example:8787",
        "Sec-Fetch-Site": "same-origin",
    }
    async with client_for(sqlite_app, token=None, headers={}) as client:
        response = await client.delete("/queues/x", headers=rebinding)
        assert error_code(response, 400) == "host_not_allowed"
        assert "evil.example" in response.json()["errors"][0]["message"]
        read = await client.get("/queues", headers=rebinding)
        assert error_code(read, 400) == "host_not_allowed"
    assert await queue_names(sqlite_app) == ["x"]


@pytest.mark.parametrize("host", ["localhost:8787", "LOCALHOST", "127.0.0.1:8787", "127.0.0.2", "[::1]:8787"])
async def test_loopback_names_are_always_answered(sqlite_app: conveyor.App, host: str) -> None:
    async with client_for(sqlite_app, token=None, headers={"Host": host}) as client:
        assert result(await client.get("/queues")) == []


@pytest.mark.parametrize("host", ["", "evil.example", "localhost.evil.example", "127.0.0.1.nip.io", "[::1"])
async def test_other_names_are_refused(sqlite_app: conveyor.App, host: str) -> None:
    async with client_for(sqlite_app, token=None, headers={"Host": host}) as client:
        assert error_code(await client.get("/queues"), 400) == "host_not_allowed"


async def test_allowed_hosts_add_names_and_domains(sqlite_app: conveyor.App) -> None:
    options = {"token": None, "allowed_hosts": ["queues.internal", ".example.com"]}
    for host, allowed in [
        ("queues.internal:8787", True),
        ("example.com", True),
        ("api.example.com", True),
        ("notexample.com", False),
        ("other.internal", False),
    ]:
        async with client_for(sqlite_app, headers={"Host": host}, **options) as client:
            response = await client.get("/queues")
            assert (response.status_code == 200) is allowed, (host, response.text)


async def test_a_star_answers_any_name(sqlite_app: conveyor.App) -> None:
    async with client_for(sqlite_app, allowed_hosts=["*"], headers={"Host": "anything.example"}) as client:
        assert error_code(await client.get("/queues"), 401) == "unauthorized"  # past the host check


async def test_healthz_answers_any_host(sqlite_app: conveyor.App) -> None:
    """A load balancer's or kubelet's probe calls the machine's address."""
    async with client_for(sqlite_app, headers={"Host": "10.1.2.3:8787"}) as client:
        assert result(await client.get("/healthz")) == {"status": "ok"}


# -- bearer tokens ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "authorization",
    [
        f"bearer {TOKEN}",
        f"BEARER {TOKEN}",
        f"Bearer  {TOKEN}",
        f" Bearer {TOKEN}",
        f"Bearer {TOKEN} ",
        f"Bearer {TOKEN} extra",
        f"Bearer\t{TOKEN}",
        f"Token {TOKEN}",
        TOKEN,
        "Basic " + base64.b64encode(f"anyone:{TOKEN}".encode()).decode(),
    ],
)
async def test_api_routes_take_exactly_bearer_and_the_token(
    sqlite_app: conveyor.App, authorization: str
) -> None:
    await sqlite_app.create_queue("jobs")
    async with client_for(sqlite_app, headers={"Authorization": authorization}) as client:
        assert error_code(await client.post("/queues/jobs/purge"), 401) == "unauthorized"
        assert error_code(await client.get("/metrics"), 401) == "unauthorized"


async def test_the_dashboard_also_takes_the_token_as_a_basic_password(sqlite_app: conveyor.App) -> None:
    basic = "Basic " + base64.b64encode(f"anyone:{TOKEN}".encode()).decode()
    async with client_for(sqlite_app, headers={"Authorization": basic}) as client:
        assert (await client.get("/")).status_code == 200
    wrong = "Basic " + base64.b64encode(b"anyone:guess").decode()
    async with client_for(sqlite_app, headers={"Authorization": wrong}) as client:
        assert (await client.get("/")).status_code == 401


@pytest.mark.parametrize("token", ["has space", "tab\there", "naïve", "line\nbreak"])
def test_a_token_that_cannot_travel_in_a_header_is_refused(sqlite_app: conveyor.App, token: str) -> None:
    from conveyor.http import create_api

    with pytest.raises(ValueError, match="token"):
        create_api(sqlite_app, token=token)


@pytest.mark.parametrize("parameter", ["token", "access_token", "api_key", "Token"])
async def test_a_token_in_the_url_is_refused_and_nothing_is_done(
    sqlite_app: conveyor.App, parameter: str
) -> None:
    await sqlite_app.create_queue("jobs")
    for token in (TOKEN, None):
        async with client_for(sqlite_app, token=token) as client:
            response = await client.post("/queues/jobs/messages", params={parameter: TOKEN}, json={"body": 1})
            assert error_code(response, 400) == "token_in_url"
            assert TOKEN not in response.text
    assert (await sqlite_app.queue("jobs").stats()).backlog == 0


# -- response headers ----------------------------------------------------------------------------------


async def test_the_dashboard_cannot_be_framed_and_runs_nothing_foreign(sqlite_app: conveyor.App) -> None:
    async with client_for(sqlite_app) as client:
        page = await client.get("/")
    assert page.status_code == 200
    assert page.headers["x-frame-options"] == "DENY"
    policy = page.headers["content-security-policy"]
    for directive in (
        "default-src 'none'",
        "frame-ancestors 'none'",
        "form-action 'self'",
        "style-src 'sha256-",
    ):
        assert directive in policy
    assert "unsafe-inline" not in policy


async def test_every_answer_forbids_sniffing_and_framing(sqlite_app: conveyor.App) -> None:
    async with client_for(sqlite_app) as client:
        for response in (
            await client.get("/queues"),
            await client.get("/nowhere"),
            await client.get("/metrics"),
        ):
            assert response.headers["x-content-type-options"] == "nosniff"
            assert response.headers["x-frame-options"] == "DENY"


# -- slow and vanishing clients ------------------------------------------------------------------------


async def test_a_body_slower_than_the_timeout_is_cut_off_with_408(sqlite_app: conveyor.App) -> None:
    await sqlite_app.create_queue("jobs")
    never = asyncio.Event()

    async def trickle() -> AsyncIterator[bytes]:
        yield b'{"body": '
        await never.wait()  # the rest never comes
        yield b"1}"

    async with client_for(sqlite_app, body_timeout_seconds=0.2) as client:
        response = await client.post("/queues/jobs/messages", content=trickle())
        assert error_code(response, 408) == "request_timeout"
        assert response.headers["connection"] == "close"
        # the slot it held is free again
        result(await client.post("/queues/jobs/messages", json={"body": 2}))
    assert (await sqlite_app.queue("jobs").stats()).backlog == 1


async def test_the_body_timeout_must_be_positive(sqlite_app: conveyor.App) -> None:
    from conveyor.http import create_api

    with pytest.raises(ValueError, match="body_timeout_seconds"):
        create_api(sqlite_app, token=None, body_timeout_seconds=0)


async def test_the_access_log_is_off_unless_asked_for_and_never_shows_the_query(
    sqlite_app: conveyor.App, caplog: pytest.LogCaptureFixture
) -> None:
    await sqlite_app.create_queue("jobs")
    caplog.set_level(logging.INFO, logger="conveyor.http.access")
    async with client_for(sqlite_app) as client:
        await client.get("/queues/jobs/messages", params={"limit": "3"})
    assert [r for r in caplog.records if r.name == "conveyor.http.access"] == []

    async with client_for(sqlite_app, access_log=True) as client:
        await client.get("/queues/jobs/messages", params={"limit": "3", "secret": "s3"})
        await client.post("/queues/nowhere/messages", json={"body": 1})
    lines = [r.getMessage() for r in caplog.records if r.name == "conveyor.http.access"]
    assert len(lines) == 2
    assert " GET /queues/jobs/messages 200 " in lines[0]
    assert " POST /queues/nowhere/messages 404 " in lines[1]
    assert not any("limit" in line or "s3" in line or TOKEN in line for line in lines)


async def test_v8_content_type_is_invalid_content_type(sqlite_app: conveyor.App) -> None:
    await sqlite_app.create_queue("jobs")
    async with client_for(sqlite_app) as client:
        response = await client.post("/queues/jobs/messages", json={"body": "x", "content_type": "v8"})
        assert error_code(response, 400) == "invalid_content_type"
        assert "Workers runtime" in response.json()["errors"][0]["message"]
        batch = await client.post(
            "/queues/jobs/messages/batch",
            json={"messages": [{"body": 1}, {"body": "x", "content_type": "v8"}]},
        )
        assert error_code(batch, 400) == "invalid_content_type"
    assert (await sqlite_app.queue("jobs").stats()).backlog == 0
