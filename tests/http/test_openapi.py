"""/openapi.json describes the API as it answers: schemathesis generates requests for every operation
of both mounts (valid and invalid ones) against a real `conveyor serve` on 127.0.0.1 and checks
that nothing is a 5xx and every answer matches the document (status, content type, schema)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from tests.cli.test_serve import wait_for_address

TOKEN = "openapi-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
WAIT_SECONDS = 30.0
# Per operation and phase; about 30 operations: a few hundred requests in all.
EXAMPLES_PER_OPERATION = 10
# The longest long poll a generated pull may ask for (the document allows 20,000 ms).
MAX_WAIT_MS = 200


@pytest.fixture(scope="module")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`conveyor serve` in its own process, with a queue `jobs` (the document's example) holding messages."""
    folder = tmp_path_factory.mktemp("openapi")
    env = {key: value for key, value in os.environ.items() if not key.startswith("CONVEYOR_")}
    env["CONVEYOR_TOKEN"] = TOKEN
    command = [
        sys.executable,
        "-m",
        "conveyor",
        "--url",
        f"sqlite:///{folder / 'api.db'}",
        "serve",
        "--port",
        "0",
    ]
    log = folder / "serve.err"
    with log.open("w") as errors:
        server = subprocess.Popen(command, cwd=folder, env=env, stdout=subprocess.DEVNULL, stderr=errors)
    try:
        address = wait_for_address(log, server)  # type: ignore[arg-type]
        with httpx.Client(base_url=address, headers=AUTH, timeout=WAIT_SECONDS) as client:
            for name in ("jobs", "jobs-dlq"):
                assert client.post("/queues", json={"name": name}).status_code == 201
            messages = [{"body": {"n": n}} for n in range(50)]
            assert client.post("/queues/jobs/messages/batch", json={"messages": messages}).status_code == 200
        yield address
        server.send_signal(signal.SIGTERM)
        server.wait(WAIT_SECONDS)
        assert "Traceback" not in log.read_text(), log.read_text()
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


@pytest.fixture
def api_schema(live_server: str) -> Any:
    return schemathesis.openapi.from_url(f"{live_server}/openapi.json")


schema = schemathesis.pytest.from_fixture("api_schema")


# Valid by the document, refused by design for a reason a JSON schema cannot state: replaying a
# queue into itself, renaming a queue in a Cloudflare update, a queue as its own dead-letter queue.
REFUSES_SOME_VALID_BODIES = {
    ("POST", "/queues/{name}/messages/replay"),
    ("PUT", "/queues/{name}/consumers/http"),
    ("POST", "/client/v4/accounts/{account_id}/queues/{queue_id}/consumers"),
    ("PUT", "/client/v4/accounts/{account_id}/queues/{queue_id}/consumers/{consumer_id}"),
    ("PUT", "/client/v4/accounts/{account_id}/queues/{queue_id}"),
    ("PATCH", "/client/v4/accounts/{account_id}/queues/{queue_id}"),
}


# A made-up Content-Length (or Transfer-Encoding, Host) is refused by uvicorn with a plain-text 400
# before the request reaches the API; the document describes the API.
FRAMING_HEADERS = {"content-length", "transfer-encoding", "host"}


@pytest.mark.slow
@schema.parametrize()
@settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, suppress_health_check=list(HealthCheck))
def test_the_api_answers_as_its_openapi_document_says(case: Any) -> None:
    from schemathesis.checks import CHECKS

    body = case.body
    if isinstance(body, dict) and isinstance(body.get("wait_ms"), int) and body["wait_ms"] > MAX_WAIT_MS:
        body["wait_ms"] = MAX_WAIT_MS  # a long poll on a drained queue waits it out: keep the run short
    if case.headers:  # framing headers the generator makes up are answered by the HTTP server, not the API
        case.headers = {k: v for k, v in case.headers.items() if k.lower() not in FRAMING_HEADERS}
    excluded = []
    if (case.method.upper(), case.path) in REFUSES_SOME_VALID_BODIES:
        excluded.append(CHECKS.get_one("positive_data_acceptance"))
    case.call_and_validate(headers=AUTH, excluded_checks=excluded)
