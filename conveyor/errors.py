"""One exception hierarchy rooted at ConveyorError; every error carries a stable code."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


class ConveyorError(Exception):
    """Base of every error conveyor raises on purpose."""

    code = "conveyor_error"


class ConveyorValueError(ConveyorError, ValueError):
    """A bad value: nothing was changed."""

    code = "invalid_value"


class InvalidSchedule(ConveyorValueError):
    """A schedule conveyor cannot run: a bad cron expression, time zone, interval or name, or a
    queue whose dedup window is too short for one message per tick (checked at worker start)."""

    code = "invalid_schedule"


class InvalidQueueName(ConveyorValueError):
    """A queue or topic name outside 1-63 characters of `A-Z a-z 0-9 _ -`."""

    code = "invalid_queue_name"


class LimitExceeded(ConveyorValueError):
    """A value outside a named limit; the message names the limit and the value."""

    code = "limit_exceeded"

    def __init__(self, message: str, *, limit: str = "", value: Any = None, maximum: Any = None) -> None:
        super().__init__(message)
        self.limit = limit
        self.value = value
        self.maximum = maximum


class MessageTooLarge(LimitExceeded):
    """A serialised body over `Limits.max_message_bytes` (default 128,000 bytes)."""

    code = "message_too_large"


class BatchTooLarge(LimitExceeded):
    """The batch's total size in bytes is over the limit."""

    code = "batch_too_large"


class BatchCountTooLarge(LimitExceeded):
    """The batch holds more messages than the limit."""

    code = "batch_count_too_large"


class QueueFull(LimitExceeded):
    """A send that would take the queue past its `max_backlog_messages` or `max_backlog_bytes`;
    nothing of it was stored. The HTTP API answers 429 with Retry-After."""

    code = "queue_full"

    def __init__(self, queue: str, limit: str, backlog: int, adding: int, maximum: int) -> None:
        unit = "bytes" if limit == "max_backlog_bytes" else "messages"
        super().__init__(
            f"queue {queue!r} is full: it holds {backlog:,} {unit} and this send adds {adding:,}; "
            f"its {limit} is {maximum:,}",
            limit=limit,
            value=backlog + adding,
            maximum=maximum,
        )
        self.queue = queue
        #: what the queue held when the send was refused (messages or bytes, as `limit` counts)
        self.backlog = backlog


class InvalidURL(ConveyorValueError):
    """An engine URL conveyor cannot use (unknown scheme, bad option)."""

    code = "invalid_url"


class InvalidContentType(ConveyorValueError):
    """A content type other than `json`, `text` or `bytes`, or a body that does not fit it."""

    code = "invalid_content_type"


class QueueNotFound(ConveyorValueError, LookupError):
    """The queue does not exist (and the App's `auto_create` is off, or the call never creates)."""

    code = "queue_not_found"

    def __init__(self, name: str) -> None:
        super().__init__(f"queue {name!r} does not exist")
        self.queue = name


class InvalidDedupId(ConveyorValueError):
    """A dedup id that is not 1 to 128 printable ASCII characters without space."""

    code = "invalid_dedup_id"


class InvalidHeaders(ConveyorValueError):
    """Message headers that are not a mapping of strings to strings within the limits
    (`Limits.max_headers`, `Limits.max_header_key_length`)."""

    code = "invalid_headers"


class InvalidGroupId(ConveyorValueError):
    """A message group id that is not 1 to 128 printable ASCII characters without space."""

    code = "invalid_group_id"


class PartitionCountFixed(ConveyorValueError):
    """`update_queue` naming a partition count other than the queue's: it is fixed at creation."""

    code = "partition_count_fixed"


class QueueAlreadyExists(ConveyorValueError):
    """`create_queue` of a name in use, without `exist_ok=True`."""

    code = "queue_already_exists"

    def __init__(self, name: str) -> None:
        super().__init__(f"queue {name!r} already exists")
        self.queue = name


class QueuePaused(ConveyorError):
    """Raised by pull on a paused queue (the HTTP API answers 409)."""

    code = "queue_paused"

    def __init__(self, name: str) -> None:
        super().__init__(f"queue {name!r} is paused: delivery is stopped until it is resumed")
        self.queue = name


class MessageNotFound(ConveyorValueError, LookupError):
    """The queue holds no message of that id (acked, expired, deleted, or never sent): the CLI's
    `messages delete` and the HTTP API's DELETE answer with it (404); `Queue.delete` returns False."""

    code = "message_not_found"

    def __init__(self, queue: str, message_id: str) -> None:
        super().__init__(f"queue {queue!r} holds no message {message_id!r}")
        self.queue = queue
        self.message_id = message_id


class MessageLeased(ConveyorError):
    """`Queue.delete` of a message a consumer holds under a live lease: nothing was deleted (the
    lease's outcome decides; try again after it). The HTTP API answers 409."""

    code = "message_leased"

    def __init__(self, queue: str, message_id: str) -> None:
        super().__init__(
            f"message {message_id!r} of queue {queue!r} is leased by a consumer: nothing was deleted; "
            "delete it once its lease ends"
        )
        self.queue = queue
        self.message_id = message_id


class MessageValidationError(ConveyorValueError):
    """A body refused by the queue's pydantic schema; `errors` is pydantic's error list."""

    code = "message_validation_failed"

    def __init__(self, message: str, errors: Sequence[Mapping[str, Any]]) -> None:
        super().__init__(message)
        self.errors = [dict(error) for error in errors]


class BodyNotSerializable(ConveyorValueError, TypeError):
    """A body conveyor cannot store as given: a type the content type cannot carry (hence a
    TypeError), or a value JSON cannot carry faithfully (NaN, Infinity, a non-string key, a lone
    surrogate; hence a ValueError, as every bad value). Nothing was sent."""

    code = "body_not_serializable"


class InvalidHandler(ConveyorValueError, TypeError):
    """A consumer handler conveyor cannot call as `handler(batch, env)`: not callable, or a
    signature that does not take those two arguments. Raised when it is registered
    (`@app.consumer`, a conveyor.toml `[[consumers]]` entry); nothing was registered."""

    code = "invalid_handler"


class MissingDependency(ConveyorError, ImportError):
    """An optional engine was chosen but its extra is not installed."""

    code = "missing_dependency"


class MetricsServerError(ConveyorError, OSError):
    """The metrics endpoint could not listen (its port is taken, or the host is not this machine's)."""

    code = "metrics_server_failed"


class BackendUnavailable(ConveyorError, ConnectionError):
    """The engine's server could not be reached."""

    code = "backend_unavailable"


class CannotConnect(BackendUnavailable):
    """The engine refused a first connection for a reason that waiting will not fix: an unknown
    host, nothing listening on the port, a database that does not exist, rejected credentials, a
    SQLite file whose folder is missing or not writable. Raised at once (no retries), with the
    cause in its one-line message; only errors that can heal (a timeout, a server starting up or
    out of connections) are retried first and end as plain BackendUnavailable."""

    code = "cannot_connect"


class StorageFull(BackendUnavailable):
    """The disk holding the engine's storage is full (SQLite: "database or disk is full"). The
    write that raised changed nothing. Sends fail until space is freed; consumers can still lease,
    ack and delete, so the queue can be drained (docs/sqlite.md, "A full disk")."""

    code = "storage_full"


class StorageUnusable(ConveyorError):
    """The engine's storage is not a database conveyor can use as it is: a SQLite path that is a
    directory, a file that is not a database, a truncated or corrupt one, tables of conveyor's
    names that conveyor did not create, or a schema newer than this conveyor. The message names the
    path; conveyor changed nothing. On NATS: a queue's log holds a record of a format newer than
    this conveyor reads (docs/nats.md, "Upgrades"); the message names the queue, the record and
    both formats, and this process reads no further record of that queue."""

    code = "storage_unusable"


class AppClosed(ConveyorError, RuntimeError):
    """The App was used after `close()`."""

    code = "app_closed"


class EventBusClosed(ConveyorError, RuntimeError):
    """`EventBus.publish` after `close()`."""

    code = "event_bus_closed"


class HandlerTimedOut(ConveyorError, TimeoutError):
    """A consumer's handler ran past its `timeout`: it was cancelled and the messages it had not
    marked are retried (the attempt counts), then dead-lettered after the last retry."""

    code = "handler_timed_out"

    def __init__(self, seconds: float) -> None:
        super().__init__(f"timed out after {seconds:g} s")
        self.seconds = seconds


class OwnerClosed(ConveyorError, RuntimeError):
    """`Owned.call` on an owner that is not running (not started, or closed)."""

    code = "owner_closed"


class TopicNotFound(ConveyorValueError, LookupError):
    """No queue subscribes to the topic (a topic exists while it has subscriptions)."""

    code = "topic_not_found"

    def __init__(self, name: str) -> None:
        super().__init__(f"topic {name!r} does not exist: no queue subscribes to it")
        self.topic = name


class SubscriptionNotFound(ConveyorValueError, LookupError):
    """The queue does not subscribe to the topic."""

    code = "subscription_not_found"

    def __init__(self, topic: str, queue: str) -> None:
        super().__init__(f"queue {queue!r} does not subscribe to topic {topic!r}")
        self.topic = topic
        self.queue = queue
