"""Choosing an engine by URL: lazy imports, clear errors, passwords never shown."""

from __future__ import annotations

import sys

import pytest

import conveyor
from conveyor.backends import from_url, redact
from conveyor.errors import InvalidURL, MissingDependency


@pytest.mark.parametrize("url", ["", "conveyor.db", "kafka://localhost", 42])
def test_bad_urls_are_clear_errors(url: object) -> None:
    with pytest.raises(InvalidURL):
        from_url(url)  # type: ignore[arg-type]


def test_a_missing_driver_names_the_extra_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "conveyor.backends.postgres", raising=False)
    monkeypatch.delitem(sys.modules, "conveyor.backends.postgres.backend", raising=False)
    monkeypatch.setitem(sys.modules, "psycopg", None)  # what an uninstalled package looks like
    with pytest.raises(MissingDependency, match=r"pip install 'conveyor\[postgres\]'"):
        from_url("postgresql://127.0.0.1/test")


def test_the_url_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONVEYOR_URL", "memory://")
    assert conveyor.App().backend.engine == "memory"
    monkeypatch.delenv("CONVEYOR_URL")
    assert conveyor.App().url == "sqlite:///conveyor.db"


def test_passwords_are_redacted() -> None:
    assert redact("postgresql://user:secret@db/test") == "postgresql://user:***@db/test"
    assert redact("redis://:secret@127.0.0.1:6379/0") == "redis://:***@127.0.0.1:6379/0"
    assert redact("sqlite:///conveyor.db") == "sqlite:///conveyor.db"
