"""Every default and limit, named once and validated in one place (Cloudflare Queues' values)."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, fields

from conveyor.errors import (
    ConveyorValueError,
    InvalidDedupId,
    InvalidGroupId,
    InvalidQueueName,
    LimitExceeded,
    MessageTooLarge,
    QueueFull,
)
from conveyor.types import OutgoingMessage, PullConsumer, QueueSettings

QUEUE_NAME_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,63}")

DEFAULT_URL = "sqlite:///conveyor.db"
URL_ENV_VAR = "CONVEYOR_URL"

# Message and batch sizes, in bytes of the serialised body.
MAX_MESSAGE_BYTES = 128_000
MAX_BATCH_MESSAGES = 100
MAX_BATCH_BYTES = 256_000

# Delays, in seconds: `send(delay_seconds=)`, `retry(delay_seconds=)`, a queue's delivery delay.
MAX_DELAY_SECONDS = 86_400

# A send the engine could not confirm (BackendUnavailable, not StorageFull) is tried again, with
# the same message ids, for up to this long after its first failure before the caller gets the
# error (docs/semantics.md, "Ambiguous sends"): every engine stores an id once, so a repeat never
# stores twice.
SEND_RETRY_SECONDS = 10.0
SEND_RETRY_FIRST_SECONDS = 0.1
SEND_RETRY_MAX_SECONDS = 2.0

# Deduplication: a send naming a dedup id already sent to the queue within its dedup window
# stores nothing and returns the first message's id. A dedup id is 1 to 128 printable ASCII
# characters, no space (as SQS's MessageDeduplicationId). Window 0 turns it off for the queue.
DEFAULT_DEDUP_WINDOW_SECONDS = 300
MAX_DEDUP_WINDOW_SECONDS = 86_400
MAX_DEDUP_ID_LENGTH = 128
DEDUP_ID_PATTERN = re.compile(r"[!-~]{1,128}")
# Ordered message groups (as SQS FIFO's MessageGroupId): messages naming one group are delivered
# in send order, one at a time. A group id is 1 to 128 printable ASCII characters, no space.
MAX_GROUP_ID_LENGTH = 128
GROUP_ID_PATTERN = re.compile(r"[!-~]{1,128}")
# A queue's partitions (`create_queue(partitions=)`), fixed at creation.
DEFAULT_PARTITIONS = 1
MAX_PARTITIONS = 64

# Message ids (core/ids.py makes 32 hex digits): the shape /openapi.json gives a path parameter
# naming one (any other text names no message: 404).
MESSAGE_ID_PATTERN = re.compile(r"[0-9A-Za-z_-]{1,128}")

# Schedules (conveyor/schedules.py): a worker that starts sends the latest tick only if it is at
# most the catch-up window old (never a burst of missed ticks); a schedule's queue needs a dedup
# window of at least its catch-up window plus the margin (for the workers' clocks and slow sends).
DEFAULT_SCHEDULE_CATCH_UP_SECONDS = 60.0
SCHEDULE_DEDUP_MARGIN_SECONDS = 30.0
MAX_SCHEDULE_CATCH_UP_SECONDS = MAX_DEDUP_WINDOW_SECONDS - SCHEDULE_DEDUP_MARGIN_SECONDS
MIN_SCHEDULE_EVERY_SECONDS = 1.0
MAX_SCHEDULE_EVERY_SECONDS = 366 * 86_400
# a schedule's name goes into its dedup ids: printable ASCII without space or ':'
SCHEDULE_NAME_PATTERN = re.compile(r"[!-9;-~]{1,80}")
# how many next runs `conveyor schedules list` shows
SCHEDULE_NEXT_RUNS = 3
# Message headers (`send(headers=)`): string keys and values; at most this many, each key 1 to
# this many characters. Their JSON counts toward `max_message_bytes` with the body.
MAX_HEADERS = 64
MAX_HEADER_KEY_LENGTH = 256
# A dead letter's headers name its record (conveyor-dead-letter-*); its error is cut to this
# many characters there (the whole error stays in the record).
MAX_DEAD_LETTER_ERROR_HEADER_LENGTH = 1_024

# Consumer settings.
DEFAULT_MAX_BATCH_SIZE = 10
MAX_BATCH_SIZE = 100
DEFAULT_MAX_BATCH_TIMEOUT = 5.0
MAX_BATCH_TIMEOUT = 60.0
DEFAULT_MAX_RETRIES = 3
MAX_RETRIES = 100
DEFAULT_RETRY_DELAY = 0.0
# Exponential retry backoff (`retry_backoff="exponential"`): the n-th retry waits a random time
# between 0 and min(cap, base * 2 ** (n - 1)) seconds ("full jitter").
DEFAULT_RETRY_BACKOFF_BASE = 1.0
DEFAULT_RETRY_BACKOFF_CAP = 300.0
# Handler time limit (`timeout=`): None means none. A limit is between these (seconds).
MIN_HANDLER_TIMEOUT = 0.01
MAX_HANDLER_TIMEOUT = 43_200.0
# A handler cancelled at its time limit gets this long (real time) to end before its slot is
# taken back anyway (a handler that swallows the cancel keeps running, unsupervised).
HANDLER_CANCEL_GRACE_SECONDS = 5.0
# None means autoscale from 1 up to this many concurrent batches per consumer.
AUTOSCALE_MAX_CONCURRENCY = 10
MAX_CONCURRENCY = 250

# Consumer rate limits (`max_rate`): messages per second a consumer may lease.
MIN_RATE_PER_SECOND = 0.001
MAX_RATE_PER_SECOND = 1_000_000.0

# Leases: a delivered message stays invisible this long unless renewed.
DEFAULT_VISIBILITY_TIMEOUT = 30.0
MIN_VISIBILITY_TIMEOUT = 0.05
MAX_VISIBILITY_TIMEOUT = 43_200.0
# Pull consumers (Queue.pull / HTTP): batch size default and bound.
DEFAULT_PULL_BATCH_SIZE = 5
# A queue's pull consumer settings (batch size, retries, ...) as a pull reads them are kept this
# long per process: a change made by another process reaches pulls within it (seconds).
PULL_CONSUMER_CACHE_SECONDS = 1.0
# Worker heartbeats (`conveyor workers`, GET /workers, the dashboard): a worker writes one this
# often; one older than the TTL is deleted by the next write of any worker, and a worker is listed
# as seen recently while its last heartbeat is younger than WORKERS_SEEN_SECONDS.
WORKER_HEARTBEAT_SECONDS = 5.0
WORKER_HEARTBEAT_TTL_SECONDS = 3 * WORKER_HEARTBEAT_SECONDS
WORKERS_SEEN_SECONDS = 3 * WORKER_HEARTBEAT_SECONDS
# Long-poll pulls: how long a pull may wait for a message before it answers empty (Python
# `wait=` in seconds, HTTP `wait_ms`); 0 answers at once.
MAX_PULL_WAIT_SECONDS = 20.0
# The most messages one `App.replay` call may be asked to move.
MAX_REPLAY_LIMIT = 10_000_000

# Bounded backlog: a queue's max_backlog_messages / max_backlog_bytes (None: no limit) are
# whole numbers from 1 to this (PostgreSQL's bigint); `update_queue(..., 0)` removes a limit.
MAX_BACKLOG_LIMIT = 2**63 - 1
# What HTTP's 429 for a full queue says in Retry-After, in seconds: room comes as consumers ack.
QUEUE_FULL_RETRY_AFTER_SECONDS = 1

# Retention: messages older than this are deleted.
DEFAULT_RETENTION_SECONDS = 345_600  # 4 days
MIN_RETENTION_SECONDS = 60
MAX_RETENTION_SECONDS = 1_209_600  # 14 days

# Worker shutdown: how long batches in flight may take to finish after SIGTERM.
DEFAULT_SHUTDOWN_GRACE_SECONDS = 30.0
# How often a worker deletes messages past retention.
SWEEP_INTERVAL_SECONDS = 60.0
# Worker metrics (`conveyor worker --metrics-port`): the address the endpoint listens on by
# default (this machine only), how often the queue gauges are read, and the largest share of time
# spent reading them (a reading that took 1 s waits 10 s for the next).
DEFAULT_METRICS_HOST = "127.0.0.1"
MAX_PORT = 65_535
METRICS_SAMPLE_INTERVAL_SECONDS = 5.0
METRICS_SAMPLER_MAX_DUTY = 0.1
# The longest an idle consumer sleeps before it looks again on its own (the fallback poll).
IDLE_POLL_SECONDS = 1.0

# In-process EventBus: events each subscriber may hold unread, and how long a publisher waits
# for room in a full subscriber queue before dropping the event for it (overflow="wait").
DEFAULT_EVENT_BUS_MAXSIZE = 1_000
MAX_EVENT_BUS_MAXSIZE = 10_000_000
DEFAULT_EVENT_BUS_PUT_TIMEOUT = 1.0
MAX_EVENT_BUS_PUT_TIMEOUT = 3_600.0

# conveyor.Owned: calls that may wait for the owner before `call` waits for room.
DEFAULT_OWNED_MAX_WAITING = 100
MAX_OWNED_MAX_WAITING = 1_000_000


@dataclass(frozen=True)
class Limits:
    """Per-app limits; the defaults are Cloudflare Queues'.

    `App(limits=conveyor.Limits(max_message_bytes=64_000))` changes them for one App. Sizes are
    bytes of the serialised body; delays and retention are seconds.

    Every check of a value against one of these reads the App's Limits: sends, `retry_delay`,
    `retry(delay_seconds=)`, pulls, consumer settings, queue settings.

    Attributes:
        max_message_bytes: largest message body (default 128,000).
        max_batch_messages: most messages in one `send_batch` (default 100).
        max_batch_bytes: largest `send_batch` in all (default 256,000).
        max_delay_seconds: longest send delay, retry delay (fixed, per message or backoff cap)
            or delivery delay (default 86,400).
        min_retention_seconds: shortest queue retention (default 60).
        max_retention_seconds: longest queue retention (default 1,209,600: 14 days).
        max_batch_size: largest consumer `max_batch_size` and pull `batch_size` (default 100).
        max_batch_timeout: longest consumer `max_batch_timeout` (default 60).
        max_retries: most consumer `max_retries` (default 100).
        min_visibility_timeout: shortest lease, consumer or pull (default 0.05).
        max_visibility_timeout: longest lease, consumer or pull (default 43,200: 12 h).
        max_concurrency: most consumer `max_concurrency` (default 250).
        max_handler_timeout: longest consumer `timeout` (default 43,200: 12 h).
        max_headers: most headers of one message (default 64).
        max_header_key_length: longest header key, in characters (default 256).
    """

    max_message_bytes: int = MAX_MESSAGE_BYTES
    max_batch_messages: int = MAX_BATCH_MESSAGES
    max_batch_bytes: int = MAX_BATCH_BYTES
    max_delay_seconds: float = MAX_DELAY_SECONDS
    min_retention_seconds: float = MIN_RETENTION_SECONDS
    max_retention_seconds: float = MAX_RETENTION_SECONDS
    max_batch_size: int = MAX_BATCH_SIZE
    max_batch_timeout: float = MAX_BATCH_TIMEOUT
    max_retries: int = MAX_RETRIES
    min_visibility_timeout: float = MIN_VISIBILITY_TIMEOUT
    max_visibility_timeout: float = MAX_VISIBILITY_TIMEOUT
    max_concurrency: int = MAX_CONCURRENCY
    max_handler_timeout: float = MAX_HANDLER_TIMEOUT
    max_headers: int = MAX_HEADERS
    max_header_key_length: int = MAX_HEADER_KEY_LENGTH

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < math.inf:
                raise LimitExceeded(
                    f"Limits.{field.name} must be a finite number of at least 0, got {value!r}",
                    limit=field.name,
                    value=value,
                )
        for low, high in (
            ("min_retention_seconds", "max_retention_seconds"),
            ("min_visibility_timeout", "max_visibility_timeout"),
        ):
            if getattr(self, low) > getattr(self, high):
                raise LimitExceeded(
                    f"Limits.{low} is above Limits.{high}", limit=low, value=getattr(self, low)
                )


#: the limits of an App that names none (Cloudflare's)
DEFAULT_LIMITS = Limits()


def validate_queue_name(name: object) -> str:
    if not isinstance(name, str) or QUEUE_NAME_PATTERN.fullmatch(name) is None:
        raise InvalidQueueName(
            f"invalid queue name {name!r}: use 1 to 63 characters of A-Z, a-z, 0-9, '_' and '-'"
        )
    return name


def check_range(what: str, value: object, low: float, high: float) -> float:
    """Return `value` as a number if `low <= value <= high`, else raise LimitExceeded naming `what`.

    Any number is answered with LimitExceeded: NaN, ±Infinity and integers too large for a float
    (`10**400`) included, never OverflowError.
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise LimitExceeded(f"{what} must be a number, got {value!r}", limit=what, value=value)
    # int and float compare exactly in Python, whatever the int's size: no float() conversion here
    if (isinstance(value, float) and math.isnan(value)) or not low <= value <= high:
        raise LimitExceeded(
            f"{what} is {_shown(value)}; it must be between {low:,} and {high:,}",
            limit=what,
            value=value,
            maximum=high,
        )
    return value


def _shown(value: float) -> str:
    """A number for a message: digits when short, its size when huge (str() of a 5,000-digit int fails)."""
    if isinstance(value, int) and abs(value) >= 10**18:
        digits = int(value.bit_length() * 0.30103)  # log10(2)
        return f"a {'negative ' if value < 0 else ''}number of about {digits} digits"
    return f"{value:,}"


def check_int_range(what: str, value: object, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise LimitExceeded(f"{what} must be a whole number, got {value!r}", limit=what, value=value)
    check_range(what, value, low, high)
    return value


def check_delay(what: str, value: object, limits: Limits) -> float:
    return check_range(what, value, 0, limits.max_delay_seconds)


def check_retention(value: object, limits: Limits) -> float:
    return check_range("retention_seconds", value, limits.min_retention_seconds, limits.max_retention_seconds)


def check_dedup_window(value: object) -> float:
    return check_range("dedup_window_seconds", value, 0, MAX_DEDUP_WINDOW_SECONDS)


def validate_dedup_id(dedup_id: object) -> str | None:
    """`dedup_id` if it is None or 1 to MAX_DEDUP_ID_LENGTH printable ASCII characters without
    space, else InvalidDedupId."""
    if dedup_id is None:
        return None
    if not isinstance(dedup_id, str) or DEDUP_ID_PATTERN.fullmatch(dedup_id) is None:
        shown = repr(dedup_id) if not isinstance(dedup_id, str) or len(dedup_id) <= 200 else "too long"
        raise InvalidDedupId(
            f"invalid dedup_id {shown}: use 1 to {MAX_DEDUP_ID_LENGTH} printable ASCII characters "
            "without space (! to ~)"
        )
    return dedup_id


def check_partitions(value: object) -> int:
    return check_int_range("partitions", value, 1, MAX_PARTITIONS)


def validate_group(group: object) -> str | None:
    """`group` if it is None or 1 to MAX_GROUP_ID_LENGTH printable ASCII characters without
    space, else InvalidGroupId."""
    if group is None:
        return None
    if not isinstance(group, str) or GROUP_ID_PATTERN.fullmatch(group) is None:
        shown = repr(group) if not isinstance(group, str) or len(group) <= 200 else "too long"
        raise InvalidGroupId(
            f"invalid group {shown}: use 1 to {MAX_GROUP_ID_LENGTH} printable ASCII characters "
            "without space (! to ~)"
        )
    return group


def check_visibility_timeout(value: object, limits: Limits) -> float:
    return check_range(
        "visibility_timeout", value, limits.min_visibility_timeout, limits.max_visibility_timeout
    )


def check_pull_wait(value: object) -> float:
    return check_range("wait", value, 0, MAX_PULL_WAIT_SECONDS)


def check_backlog_limit(what: str, value: object) -> int | None:
    """A backlog limit: None (no limit) or a whole number from 1 to MAX_BACKLOG_LIMIT."""
    if value is None:
        return None
    return check_int_range(what, value, 1, MAX_BACKLOG_LIMIT)


def check_room(
    queue: str,
    settings: QueueSettings,
    held: tuple[int, int],
    adding: tuple[int, int],
) -> None:
    """QueueFull unless `adding` (messages, bytes) fits beside `held` within the limits."""
    if settings.max_backlog_messages is not None and held[0] + adding[0] > settings.max_backlog_messages:
        raise QueueFull(queue, "max_backlog_messages", held[0], adding[0], settings.max_backlog_messages)
    if settings.max_backlog_bytes is not None and held[1] + adding[1] > settings.max_backlog_bytes:
        raise QueueFull(queue, "max_backlog_bytes", held[1], adding[1], settings.max_backlog_bytes)


def check_message_size(data: bytes, limits: Limits) -> bytes:
    """`data` (a serialised body) if it is within `max_message_bytes`, else MessageTooLarge."""
    if len(data) > limits.max_message_bytes:
        raise MessageTooLarge(
            f"body is {len(data):,} bytes; the limit is {limits.max_message_bytes:,}",
            limit="max_message_bytes",
            value=len(data),
            maximum=limits.max_message_bytes,
        )
    return data


def backlog_added(messages: Sequence[OutgoingMessage]) -> dict[str, tuple[int, int]]:
    """What a send adds to each queue it names: (messages, bytes of bodies)."""
    added: dict[str, tuple[int, int]] = {}
    for message in messages:
        count, size = added.get(message.queue, (0, 0))
        added[message.queue] = (count + 1, size + len(message.body))
    return added


# -- rates ("100/s"): max_rate of a consumer, read the same in Python, the CLI and conveyor.toml

_RATE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*/\s*(s|sec|second|m|min|minute|h|hour)\s*")
_UNIT_SECONDS = {"s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60, "h": 3600, "hour": 3600}


def parse_rate(value: object) -> float:
    """Messages per second from "100/s", "600/m", "10/h" or a number (per second); LimitExceeded
    outside MIN_RATE_PER_SECOND-MAX_RATE_PER_SECOND or for anything else."""
    if isinstance(value, str):
        match = _RATE.fullmatch(value)
        if match is None:
            raise LimitExceeded(
                f'max_rate must look like "100/s", "600/m" or "10/h", got {value!r}',
                limit="max_rate",
                value=value,
            )
        rate: object = float(match[1]) / _UNIT_SECONDS[match[2]]
    else:
        rate = value
    return check_range("max_rate", rate, MIN_RATE_PER_SECOND, MAX_RATE_PER_SECOND)


def check_pull_consumer(queue: str, consumer: PullConsumer, limits: Limits) -> PullConsumer:
    """A queue's pull consumer settings, each in its range (as a pull's and a consumer's)."""
    check_int_range("batch_size", consumer.batch_size, 1, limits.max_batch_size)
    check_int_range("max_retries", consumer.max_retries, 0, limits.max_retries)
    check_delay("retry_delay", consumer.retry_delay, limits)
    check_visibility_timeout(consumer.visibility_timeout, limits)
    if consumer.dead_letter_queue is not None:
        validate_queue_name(consumer.dead_letter_queue)
        if consumer.dead_letter_queue == queue:
            raise ConveyorValueError(
                f"dead_letter_queue: queue {queue!r} cannot be its own dead-letter queue"
            )
    return consumer
