"""conveyor: durable batched message queues with the programming model of Cloudflare Queues."""

from conveyor.app import App
from conveyor.background import BackgroundSender
from conveyor.consumer import Env, Message, MessageBatch
from conveyor.errors import (
    AppClosed,
    BackendUnavailable,
    BatchCountTooLarge,
    BatchTooLarge,
    BodyNotSerializable,
    CannotConnect,
    ConveyorError,
    ConveyorValueError,
    EventBusClosed,
    InvalidContentType,
    InvalidDedupId,
    InvalidHandler,
    InvalidQueueName,
    InvalidURL,
    LimitExceeded,
    MessageTooLarge,
    MessageValidationError,
    MetricsServerError,
    MissingDependency,
    QueueAlreadyExists,
    QueueFull,
    QueueNotFound,
    QueuePaused,
    StorageFull,
    StorageUnusable,
)
from conveyor.events import Event, EventBus
from conveyor.limits import Limits
from conveyor.producer import AckResult, ExtendResult, PeekedMessage, PulledMessage, Queue, SendRequest
from conveyor.routing import Router, RouterStats, TypeCounters
from conveyor.topics import PublishResult, Topic
from conveyor.types import DeadLetterInfo, QueueInfo, QueueSettings, QueueStats, Subscription

__version__ = "0.1.0"

__all__ = [
    "AckResult",
    "App",
    "AppClosed",
    "BackendUnavailable",
    "BackgroundSender",
    "BatchCountTooLarge",
    "BatchTooLarge",
    "BodyNotSerializable",
    "CannotConnect",
    "ConveyorError",
    "ConveyorValueError",
    "DeadLetterInfo",
    "Env",
    "Event",
    "EventBus",
    "EventBusClosed",
    "ExtendResult",
    "InvalidContentType",
    "InvalidDedupId",
    "InvalidHandler",
    "InvalidQueueName",
    "InvalidURL",
    "LimitExceeded",
    "Limits",
    "Message",
    "MessageBatch",
    "MessageTooLarge",
    "MessageValidationError",
    "MetricsServerError",
    "MissingDependency",
    "PeekedMessage",
    "PublishResult",
    "PulledMessage",
    "Queue",
    "QueueAlreadyExists",
    "QueueFull",
    "QueueInfo",
    "QueueNotFound",
    "QueuePaused",
    "QueueSettings",
    "QueueStats",
    "Router",
    "RouterStats",
    "SendRequest",
    "StorageFull",
    "StorageUnusable",
    "Subscription",
    "Topic",
    "TypeCounters",
]
