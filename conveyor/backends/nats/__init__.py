"""nats:// — the NATS JetStream engine (see backend.py and docs/nats.md)."""

from conveyor.backends.nats.backend import NatsBackend

__all__ = ["NatsBackend"]
