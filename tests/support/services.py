"""Local services for tests: skip when absent, fail when CONVEYOR_REQUIRE_SERVICES=1 (as in CI)."""

from __future__ import annotations

import os
import socket

import pytest

POSTGRES_HOST, POSTGRES_PORT = "127.0.0.1", 5432
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
NATS_HOST, NATS_PORT = "127.0.0.1", 4222
POSTGRES_URL = f"postgresql://{POSTGRES_HOST}:{POSTGRES_PORT}/test"
REDIS_URL = f"redis://{REDIS_HOST}:{REDIS_PORT}/0"
NATS_URL = f"nats://{NATS_HOST}:{NATS_PORT}"


def services_required() -> bool:
    return os.environ.get("CONVEYOR_REQUIRE_SERVICES") == "1"


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def need(what: str, available: bool, how: str = "") -> None:
    """Skip the calling test when `what` is missing; under CONVEYOR_REQUIRE_SERVICES=1, fail instead."""
    if available:
        return
    reason = f"{what} is not available{': ' + how if how else ''}"
    if services_required():
        pytest.fail(f"{reason} (CONVEYOR_REQUIRE_SERVICES=1 requires it)", pytrace=False)
    pytest.skip(reason)
