"""conveyor.toml: a project's URL, queues, consumers and topics (the wrangler.toml of conveyor).

Loading validates every key with pydantic (unknown keys are errors) and reports the first problems
as `conveyor.toml: consumers[0].max_batch_size: Input should be less than or equal to 100`.
Applying it creates or updates the declared queues and topic subscriptions and registers the
declared consumers on an App.
"""

from __future__ import annotations

import importlib
import sys
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import pydantic
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from conveyor import limits as L
from conveyor.admin import subscribe
from conveyor.app import App
from conveyor.errors import ConveyorValueError
from conveyor.topics import normalize_types

CONFIG_FILE = "conveyor.toml"


class ConfigError(ConveyorValueError):
    """conveyor.toml is missing, unreadable or invalid; the message names the file and the key."""

    code = "invalid_config"


def _import_path(value: str) -> str:
    module, colon, attribute = value.partition(":")
    if (
        not colon
        or not module
        or not attribute
        or not all(part.isidentifier() for part in (*module.split("."), *attribute.split(".")))
    ):
        raise ValueError(f"expected 'module:attribute' (e.g. 'handlers:handle'), got {value!r}")
    return value


QueueName = Annotated[str, AfterValidator(L.validate_queue_name)]
ImportPath = Annotated[str, AfterValidator(_import_path)]


class _Section(BaseModel):
    # strict: a number written as a string ("10") is an error, not silently converted
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class QueueConfig(_Section):
    name: QueueName
    delivery_delay: float = Field(0.0, ge=0, le=L.MAX_DELAY_SECONDS)
    retention_seconds: float = Field(
        float(L.DEFAULT_RETENTION_SECONDS), ge=L.MIN_RETENTION_SECONDS, le=L.MAX_RETENTION_SECONDS
    )


class ConsumerConfig(_Section):
    queue: QueueName
    handler: ImportPath
    max_batch_size: int = Field(L.DEFAULT_MAX_BATCH_SIZE, ge=1, le=L.MAX_BATCH_SIZE)
    max_batch_timeout: float = Field(L.DEFAULT_MAX_BATCH_TIMEOUT, ge=0, le=L.MAX_BATCH_TIMEOUT)
    max_retries: int = Field(L.DEFAULT_MAX_RETRIES, ge=0, le=L.MAX_RETRIES)
    retry_delay: float = Field(L.DEFAULT_RETRY_DELAY, ge=0, le=L.MAX_DELAY_SECONDS)
    dead_letter_queue: QueueName | None = None
    max_concurrency: int | None = Field(None, ge=1, le=L.MAX_CONCURRENCY)
    visibility_timeout: float = Field(
        L.DEFAULT_VISIBILITY_TIMEOUT, ge=L.MIN_VISIBILITY_TIMEOUT, le=L.MAX_VISIBILITY_TIMEOUT
    )
    timeout: float | None = Field(None, ge=L.MIN_HANDLER_TIMEOUT, le=L.MAX_HANDLER_TIMEOUT)
    retry_backoff: Literal["fixed", "exponential"] = "fixed"
    retry_backoff_base: float = Field(L.DEFAULT_RETRY_BACKOFF_BASE, ge=0, le=L.MAX_DELAY_SECONDS)
    retry_backoff_cap: float = Field(L.DEFAULT_RETRY_BACKOFF_CAP, ge=0, le=L.MAX_DELAY_SECONDS)

    @model_validator(mode="after")
    def _dead_letter_queue_is_another_queue(self) -> ConsumerConfig:
        if self.dead_letter_queue == self.queue:
            raise ValueError(f"queue {self.queue!r} cannot be its own dead_letter_queue")
        return self


class MetricsConfig(_Section):
    """`[metrics]`: where `conveyor worker` serves its Prometheus metrics (off without a port)."""

    port: int | None = Field(None, ge=0, le=L.MAX_PORT)
    host: str = Field(L.DEFAULT_METRICS_HOST, min_length=1)


class SubscriptionConfig(_Section):
    queue: QueueName
    # None (or ["*"]): every type
    types: list[Annotated[str, Field(min_length=1)]] | None = Field(None, min_length=1)


class TopicConfig(_Section):
    name: QueueName
    subscriptions: list[SubscriptionConfig] = Field(min_length=1)

    @model_validator(mode="after")
    def _queues_are_unique(self) -> TopicConfig:
        queues = [subscription.queue for subscription in self.subscriptions]
        duplicates = sorted({queue for queue in queues if queues.count(queue) > 1})
        if duplicates:
            raise ValueError(
                f"topic {self.name!r} subscribes {', '.join(map(repr, duplicates))} more than once"
            )
        return self


class ConveyorConfig(_Section):
    url: str | None = None
    app: ImportPath | None = None
    queues: list[QueueConfig] = []
    consumers: list[ConsumerConfig] = []
    topics: list[TopicConfig] = []
    metrics: MetricsConfig = MetricsConfig()

    @model_validator(mode="after")
    def _names_are_unique(self) -> ConveyorConfig:
        for section, names in (
            ("queues", [queue.name for queue in self.queues]),
            ("consumers", [consumer.queue for consumer in self.consumers]),
            ("topics", [topic.name for topic in self.topics]),
        ):
            duplicates = sorted({name for name in names if names.count(name) > 1})
            if duplicates:
                raise ValueError(f"{section}: {', '.join(map(repr, duplicates))} declared more than once")
        return self

    def queue_names(self) -> list[str]:
        """Every queue the file names: declared, consumed, dead-letter and subscription queues."""
        names = {queue.name for queue in self.queues}
        names.update(subscription.queue for topic in self.topics for subscription in topic.subscriptions)
        for consumer in self.consumers:
            names.add(consumer.queue)
            if consumer.dead_letter_queue is not None:
                names.add(consumer.dead_letter_queue)
        return sorted(names)


def _location(loc: Sequence[int | str]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _describe(error: Any) -> str:
    message = str(error["msg"]).removeprefix("Value error, ")
    where = _location(error["loc"])
    return f"{where}: {message}" if where else message


def parse_config(text: str, *, source: str = CONFIG_FILE) -> ConveyorConfig:
    """Parse and validate the text of a conveyor.toml; `source` names it in errors."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from None
    try:
        return ConveyorConfig.model_validate(data)
    except pydantic.ValidationError as exc:
        problems = "; ".join(_describe(error) for error in exc.errors(include_url=False))
        raise ConfigError(f"{source}: {problems}") from None


def load_config(path: Path) -> ConveyorConfig:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot be read: {exc}") from None
    return parse_config(text, source=str(path))


# -- applying it ------------------------------------------------------------------------------


def import_object(path: str, *, search: Sequence[Path] = ()) -> Any:
    """Import `module:attribute` (dots allowed in both) with the CWD and `search` on sys.path."""
    _import_path(path)
    for folder in (Path.cwd(), *search):
        if str(folder) not in sys.path:
            sys.path.insert(0, str(folder))
    module_name, _, attribute = path.partition(":")
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as exc:
        if exc.name is not None and module_name.startswith(exc.name):
            raise ConfigError(f"cannot import {path!r}: no module named {exc.name!r}") from None
        raise  # the module exists but fails to import: its own error is the useful one
    for name in attribute.split("."):
        try:
            target = getattr(target, name)
        except AttributeError:
            raise ConfigError(f"cannot import {path!r}: {module_name!r} has no attribute {name!r}") from None
    return target


def load_app(path: str, *, search: Sequence[Path] = ()) -> App:
    target = import_object(path, search=search)
    if not isinstance(target, App):
        raise ConfigError(f"{path!r} is not a conveyor.App (it is a {type(target).__name__!r})")
    return target


def register_consumers(app: App, config: ConveyorConfig, *, search: Sequence[Path] = ()) -> None:
    """Register every `[[consumers]]` entry on `app`, importing its handler."""
    for consumer in config.consumers:
        handler = import_object(consumer.handler, search=search)
        if not callable(handler):
            raise ConfigError(
                f"handler {consumer.handler!r} is not callable (it is a {type(handler).__name__!r})"
            )
        options = consumer.model_dump(exclude={"queue", "handler"})
        app.consumer(consumer.queue, **options)(handler)


async def apply_queues(app: App, config: ConveyorConfig) -> list[str]:
    """Create the declared queues, or update their settings to match; returns the names changed."""
    changed: list[str] = []
    current = {info.name: info for info in await app.list_queues()}
    for queue in config.queues:
        existing = current.get(queue.name)
        if existing is None:
            # exist_ok: another worker starting at the same moment may create it first
            await app.create_queue(
                queue.name,
                delivery_delay=queue.delivery_delay,
                retention_seconds=queue.retention_seconds,
                exist_ok=True,
            )
            changed.append(queue.name)
        elif (existing.settings.delivery_delay, existing.settings.retention_seconds) != (
            queue.delivery_delay,
            queue.retention_seconds,
        ):
            await app.update_queue(
                queue.name, delivery_delay=queue.delivery_delay, retention_seconds=queue.retention_seconds
            )
            changed.append(queue.name)
    return changed


async def apply_topics(app: App, config: ConveyorConfig) -> list[str]:
    """Make the declared subscriptions (creating missing queues), or update their type filters to
    match; returns "topic -> queue" of each one changed. Subscriptions the file does not declare
    are left as they are (remove one with `conveyor topics unsubscribe`)."""
    changed: list[str] = []
    for topic in config.topics:
        current = {
            subscription.queue: subscription for subscription in await app.list_subscriptions(topic.name)
        }
        for wanted in topic.subscriptions:
            existing = current.get(wanted.queue)
            types = normalize_types(wanted.types)
            if existing is None or existing.types != types:
                await subscribe(app, topic.name, wanted.queue, types)
                changed.append(f"{topic.name} -> {wanted.queue}")
    return changed
