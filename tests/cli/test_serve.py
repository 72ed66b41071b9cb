"""`conveyor serve`: no unauthenticated server on a reachable address, no server answering any
Host name by accident, a taken port refused before anything is created; the real server starts,
answers with and without its token, and stops on SIGTERM."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from conveyor.http.hosts import is_loopback
from tests.cli.conftest import Cli, assert_one_error_line

WAIT_SECONDS = 30.0
TOKEN = "serve-test-token-4f9a"


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.20", "conveyor.example"])
def test_serve_refuses_a_reachable_bind_without_a_token(
    cli: Cli, monkeypatch: pytest.MonkeyPatch, host: str
) -> None:
    monkeypatch.delenv("CONVEYOR_TOKEN", raising=False)
    result = cli("serve", "--host", host)
    assert_one_error_line(
        result, f"refusing to serve on {host} without a token", "CONVEYOR_TOKEN", "[token_required]"
    )


def test_an_empty_token_counts_as_none(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONVEYOR_TOKEN", "")
    assert_one_error_line(cli("serve", "--host", "0.0.0.0"), "[token_required]")


def test_serve_on_every_interface_needs_the_names_it_answers(
    cli: Cli, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("CONVEYOR_TOKEN", TOKEN)
    assert_one_error_line(cli("serve", "--host", "0.0.0.0"), "--allowed-host", "[allowed_host_required]")
    assert not (tmp_path / "cli.db").exists()


def test_any_host_needs_a_token(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CONVEYOR_TOKEN", raising=False)
    assert_one_error_line(cli("serve", "--allowed-host", "*"), "needs a token", "[token_required]")


def test_serve_on_a_taken_port_is_one_line_and_creates_nothing(
    cli: Cli, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("CONVEYOR_TOKEN", raising=False)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = cli("serve", "--port", str(port))
    assert_one_error_line(result, f"port {port} on 127.0.0.1 is in use", "[port_in_use]")
    assert list(tmp_path.iterdir()) == []  # no database, nothing else


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.0.0.2", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("LOCALHOST", True),
        ("0.0.0.0", False),
        ("::", False),
        ("10.0.0.1", False),
        ("example.com", False),
    ],
)
def test_loopback_addresses(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


@pytest.mark.slow
def test_serve_answers_with_its_token_and_stops_on_sigterm(tmp_path: Path) -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith("CONVEYOR_")}
    env["CONVEYOR_TOKEN"] = TOKEN
    command = [
        sys.executable,
        "-m",
        "conveyor",
        "--url",
        f"sqlite:///{tmp_path / 'serve.db'}",
        "serve",
        "--port",
        "0",
    ]
    log = tmp_path / "serve.err"
    with log.open("w") as errors:
        server = subprocess.Popen(
            command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=errors, text=True
        )
    try:
        address = wait_for_address(log, server)
        with httpx.Client(base_url=address, timeout=WAIT_SECONDS) as client:
            assert client.get("/healthz").json()["success"] is True
            assert client.get("/queues").status_code == 401
            headers = {"Authorization": f"Bearer {TOKEN}"}
            created = client.post("/queues", json={"name": "jobs"}, headers=headers)
            assert created.status_code == 201, created.text
        server.send_signal(signal.SIGTERM)
        stdout, _ = server.communicate(timeout=WAIT_SECONDS)
        assert server.returncode == 0, log.read_text()
    finally:
        if server.poll() is None:
            server.kill()
            server.communicate()
    assert stdout.startswith("conveyor serve · engine sqlite:///")
    assert "auth: bearer token" in stdout
    assert stdout.strip().endswith("conveyor serve stopped.")
    assert TOKEN not in stdout + log.read_text()


def wait_for_address(log: Path, server: subprocess.Popen[str]) -> str:
    """The address the server logs once it listens (port 0: the kernel picked a free one)."""
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        assert server.poll() is None, f"the server exited early: {log.read_text()}"
        found = re.search(r"listening on (http://127\.0\.0\.1:\d+)", log.read_text())
        if found:
            return found.group(1)
        time.sleep(0.05)  # another process writes the log: polling is the only way to see it
    raise AssertionError(f"the server did not start in time: {log.read_text()}")
