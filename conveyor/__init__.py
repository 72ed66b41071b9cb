"""conveyor: durable batched message queues with the programming model of Cloudflare Queues."""

from conveyor.app import App
from conveyor.consumer.message import Message, MessageBatch
from conveyor.env import Env
from conveyor.errors import (
    BatchCountTooLarge,
    BatchTooLarge,
    BodyNotSerializable,
    ConveyorError,
    ConveyorValueError,
    InvalidQueueName,
    InvalidURL,
    LimitExceeded,
    MessageTooLarge,
    MessageValidationError,
    MissingDependency,
    QueueAlreadyExists,
    QueueNotFound,
    QueuePaused,
)
from conveyor.limits import Limits
from conveyor.producer import AckResult, PeekedMessage, PulledMessage, Queue, SendRequest
from conveyor.routing import Router, RouterStats, TypeCounters
from conveyor.types import DeadLetterInfo, QueueInfo, QueueSettings, QueueStats

__version__ = "0.1.0"

__all__ = [
    "AckResult",
    "App",
    "BatchCountTooLarge",
    "BatchTooLarge",
    "BodyNotSerializable",
    "ConveyorError",
    "ConveyorValueError",
    "DeadLetterInfo",
    "Env",
    "InvalidQueueName",
    "InvalidURL",
    "LimitExceeded",
    "Limits",
    "Message",
    "MessageBatch",
    "MessageTooLarge",
    "MessageValidationError",
    "MissingDependency",
    "PeekedMessage",
    "PulledMessage",
    "Queue",
    "QueueAlreadyExists",
    "QueueInfo",
    "QueueNotFound",
    "QueuePaused",
    "QueueSettings",
    "QueueStats",
    "Router",
    "RouterStats",
    "SendRequest",
    "TypeCounters",
]
