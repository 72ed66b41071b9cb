from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import conveyor
from conveyor.http import create_api
from tests.support.apps import AppFactory

TOKEN = "s3cret-token-for-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
# a loopback name, as a client of `conveyor serve` on its default bind uses
BASE_URL = "http://localhost:8787"


@contextlib.asynccontextmanager
async def client_for(
    app: conveyor.App, *, headers: dict[str, str] | None = None, **options: Any
) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client calling `create_api(app, token=TOKEN, **options)` in process, inside the
    API's lifespan (as a server runs it)."""
    options.setdefault("token", TOKEN)
    api = create_api(app, **options)
    async with (
        api.router.lifespan_context(api),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=api),
            base_url=BASE_URL,
            headers=AUTH if headers is None else headers,
        ) as client,
    ):
        yield client


def result(response: httpx.Response, status: int = 200) -> Any:
    """The `result` of a successful envelope."""
    assert response.status_code == status, response.text
    document = response.json()
    assert document["success"] is True and document["errors"] == [], document
    return document["result"]


def error_code(response: httpx.Response, status: int) -> str:
    """The `code` of a failed envelope (the first error's)."""
    assert response.status_code == status, response.text
    document = response.json()
    assert document["success"] is False and document["result"] is None, document
    assert document["errors"] and all(error["message"] for error in document["errors"])
    code: str = document["errors"][0]["code"]
    return code


@pytest.fixture
async def api_app(make_app: AppFactory) -> conveyor.App:
    """An App on each engine that, like `conveyor serve`'s, never creates a queue by accident."""
    return await make_app(auto_create=False)


@pytest.fixture
async def client(api_app: conveyor.App) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(api_app) as client:
        yield client


@pytest.fixture
async def sqlite_app(tmp_path: Path) -> AsyncIterator[conveyor.App]:
    """For what the HTTP layer does on its own (auth, limits, load shedding): one engine is enough."""
    async with conveyor.App(f"sqlite:///{tmp_path / 'api.db'}", auto_create=False) as app:
        yield app
