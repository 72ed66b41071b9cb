"""Engines, chosen by URL scheme and imported lazily so a missing extra fails only when chosen."""

from __future__ import annotations

import importlib
from urllib.parse import urlsplit

from conveyor.backends.base import Backend
from conveyor.backends.urls import redact
from conveyor.errors import InvalidURL, MissingDependency
from conveyor.types import SYSTEM_CLOCK, Clock

# scheme -> (module, class name, extra to install)
ENGINES: dict[str, tuple[str, str, str | None]] = {
    "memory": ("conveyor.backends.memory", "MemoryBackend", None),
    "sqlite": ("conveyor.backends.sqlite", "SQLiteBackend", None),
    "postgresql": ("conveyor.backends.postgres", "PostgresBackend", "postgres"),
    "postgres": ("conveyor.backends.postgres", "PostgresBackend", "postgres"),
    "redis": ("conveyor.backends.redis", "RedisBackend", "redis"),
    "rediss": ("conveyor.backends.redis", "RedisBackend", "redis"),
    "nats": ("conveyor.backends.nats", "NatsBackend", "nats"),
}


def from_url(url: str, *, clock: Clock = SYSTEM_CLOCK) -> Backend:
    if not isinstance(url, str) or "://" not in url:
        raise InvalidURL(f"invalid URL {url!r}: expected scheme://..., e.g. sqlite:///conveyor.db")
    scheme = urlsplit(url).scheme.lower()
    if scheme not in ENGINES:
        known = ", ".join(sorted(ENGINES))
        raise InvalidURL(f"unknown URL scheme {scheme!r} in {redact(url)!r}; known schemes: {known}")
    module_name, class_name, extra = ENGINES[scheme]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        if extra is None:
            raise
        raise MissingDependency(
            f"the {scheme} engine needs the '{extra}' extra: pip install 'conveyor[{extra}]' ({exc})"
        ) from exc
    backend_class: type[Backend] = getattr(module, class_name)
    return backend_class(url, clock=clock)


__all__ = ["Backend", "from_url", "redact"]
