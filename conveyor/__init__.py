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
    HandlerTimedOut,
    InvalidContentType,
    InvalidHandler,
    InvalidQueueName,
    InvalidURL,
    LimitExceeded,
    MessageTooLarge,
    MessageValidationError,
    MetricsServerError,
    MissingDependency,
    OwnerClosed,
    QueueAlreadyExists,
    QueueNotFound,
    QueuePaused,
    StorageFull,
    StorageUnusable,
    SubscriptionNotFound,
    TopicNotFound,
)
from conveyor.events import Event, EventBus
from conveyor.limits import Limits
from conveyor.owned import Owned
from conveyor.producer import AckResult, PeekedMessage, PulledMessage, Queue, SendRequest
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
    "HandlerTimedOut",
    "InvalidContentType",
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
    "Owned",
    "OwnerClosed",
    "PeekedMessage",
    "PublishResult",
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
    "StorageFull",
    "StorageUnusable",
    "Subscription",
    "SubscriptionNotFound",
    "Topic",
    "TopicNotFound",
    "TypeCounters",
]
