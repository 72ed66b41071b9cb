"""The consumer runtime: batches, per-message outcomes, leases, dead letters, graceful workers."""

from conveyor.consumer.backoff import RetryBackoff
from conveyor.consumer.env import Env
from conveyor.consumer.message import Message, MessageBatch
from conveyor.consumer.spec import ConsumerSpec, Handler, Lifespan
from conveyor.consumer.worker import Worker

__all__ = [
    "ConsumerSpec",
    "Env",
    "Handler",
    "Lifespan",
    "Message",
    "MessageBatch",
    "RetryBackoff",
    "Worker",
]
