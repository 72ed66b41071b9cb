"""conveyor.toml: a project's URL, queues, consumers, topics and schedules (the wrangler.toml of
conveyor), and the URL an App or a command uses when none is given.

Loading validates every key with pydantic (unknown keys are errors, with a did-you-mean) and
reports the first problems as `conveyor.toml: consumers[0].max_batch_size: Input should be less
than or equal to 100`. Durations may be numbers of seconds or strings such as "1s", "5m", "2d",
read by the same parser as the command line's. The CLI (conveyor/cli/config.py) applies a config:
creates its queues and registers its consumers on an App.
"""

from __future__ import annotations

import difflib
import os
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import pydantic
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from conveyor import limits as L
from conveyor.durations import parse_duration
from conveyor.errors import ConveyorValueError
from conveyor.limits import parse_rate
from conveyor.types import PullConsumer

#: the environment variable naming another config file than ./conveyor.toml
CONFIG_ENV_VAR = "CONVEYOR_CONFIG"
CONFIG_FILE = "conveyor.toml"


class ConfigError(ConveyorValueError):
    """conveyor.toml is missing, unreadable or invalid; the message names the file and the key."""

    code = "invalid_config"


def import_path(value: str) -> str:
    """`value` if it reads `module:attribute`; ValueError otherwise."""
    module, colon, attribute = value.partition(":")
    if (
        not colon
        or not module
        or not attribute
        or not all(part.isidentifier() for part in (*module.split("."), *attribute.split(".")))
    ):
        raise ValueError(f"expected 'module:attribute' (e.g. 'handlers:handle'), got {value!r}")
    return value


def _duration(value: Any) -> Any:
    # a string is parsed as the CLI parses it; anything else is left to the field's own checks
    return parse_duration(value) if isinstance(value, str) else value


QueueName = Annotated[str, AfterValidator(L.validate_queue_name)]
ImportPath = Annotated[str, AfterValidator(import_path)]
#: seconds, as a number or a string such as "1s", "5m", "2d"
Duration = Annotated[float, BeforeValidator(_duration)]


def _rate(value: str | float | None) -> str | float | None:
    if value is not None:
        parse_rate(value)
    return value


class _Section(BaseModel):
    # strict: a number written as a string ("10") is an error, not silently converted
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class PullConsumerConfig(_Section):
    """`[queues.pull_consumer]`: the queue's HTTP pull consumer (`App.set_pull_consumer`)."""

    batch_size: int = Field(L.DEFAULT_PULL_BATCH_SIZE, ge=1, le=L.MAX_BATCH_SIZE)
    max_retries: int = Field(L.DEFAULT_MAX_RETRIES, ge=0, le=L.MAX_RETRIES)
    retry_delay: Duration = Field(L.DEFAULT_RETRY_DELAY, ge=0, le=L.MAX_DELAY_SECONDS)
    visibility_timeout: Duration = Field(
        L.DEFAULT_VISIBILITY_TIMEOUT, ge=L.MIN_VISIBILITY_TIMEOUT, le=L.MAX_VISIBILITY_TIMEOUT
    )
    dead_letter_queue: QueueName | None = None

    def consumer(self) -> PullConsumer:
        return PullConsumer(
            batch_size=self.batch_size,
            max_retries=self.max_retries,
            retry_delay=float(self.retry_delay),
            visibility_timeout=float(self.visibility_timeout),
            dead_letter_queue=self.dead_letter_queue,
        )


class QueueConfig(_Section):
    name: QueueName
    delivery_delay: Duration = Field(0.0, ge=0, le=L.MAX_DELAY_SECONDS)
    retention_seconds: Duration = Field(
        float(L.DEFAULT_RETENTION_SECONDS), ge=L.MIN_RETENTION_SECONDS, le=L.MAX_RETENTION_SECONDS
    )
    dedup_window_seconds: Duration = Field(
        float(L.DEFAULT_DEDUP_WINDOW_SECONDS), ge=0, le=L.MAX_DEDUP_WINDOW_SECONDS
    )
    max_backlog_messages: int | None = Field(None, ge=1, le=L.MAX_BACKLOG_LIMIT)
    max_backlog_bytes: int | None = Field(None, ge=1, le=L.MAX_BACKLOG_LIMIT)
    # the queue's HTTP pull consumer; left out, the queue has none
    pull_consumer: PullConsumerConfig | None = None
    #: fixed at creation: a file naming another count than the queue's is an error
    partitions: int = Field(L.DEFAULT_PARTITIONS, ge=1, le=L.MAX_PARTITIONS)

    def settings(self) -> tuple[float, float, float, int | None, int | None, int]:
        return (
            self.delivery_delay,
            self.retention_seconds,
            self.dedup_window_seconds,
            self.max_backlog_messages,
            self.max_backlog_bytes,
            self.partitions,
        )

    def consumer(self) -> PullConsumer | None:
        return None if self.pull_consumer is None else self.pull_consumer.consumer()


class ConsumerConfig(_Section):
    queue: QueueName
    handler: ImportPath
    max_batch_size: int = Field(L.DEFAULT_MAX_BATCH_SIZE, ge=1, le=L.MAX_BATCH_SIZE)
    max_batch_timeout: Duration = Field(L.DEFAULT_MAX_BATCH_TIMEOUT, ge=0, le=L.MAX_BATCH_TIMEOUT)
    max_retries: int = Field(L.DEFAULT_MAX_RETRIES, ge=0, le=L.MAX_RETRIES)
    retry_delay: Duration = Field(L.DEFAULT_RETRY_DELAY, ge=0, le=L.MAX_DELAY_SECONDS)
    dead_letter_queue: QueueName | None = None
    max_concurrency: int | None = Field(None, ge=1, le=L.MAX_CONCURRENCY)
    visibility_timeout: Duration = Field(
        L.DEFAULT_VISIBILITY_TIMEOUT, ge=L.MIN_VISIBILITY_TIMEOUT, le=L.MAX_VISIBILITY_TIMEOUT
    )
    # "100/s", "600/m", "10/h" or a number per second; checked by conveyor (parse_rate)
    max_rate: Annotated[str | float | None, AfterValidator(_rate)] = None
    max_rate_scope: Literal["process", "global"] = "process"
    timeout: Duration | None = Field(None, ge=L.MIN_HANDLER_TIMEOUT, le=L.MAX_HANDLER_TIMEOUT)
    retry_backoff: Literal["fixed", "exponential"] = "fixed"
    retry_backoff_base: Duration = Field(L.DEFAULT_RETRY_BACKOFF_BASE, ge=0, le=L.MAX_DELAY_SECONDS)
    retry_backoff_cap: Duration = Field(L.DEFAULT_RETRY_BACKOFF_CAP, ge=0, le=L.MAX_DELAY_SECONDS)

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


class ScheduleConfig(_Section):
    """`[[schedules]]`: what `app.schedule` takes (its cron expression, interval, time zone and name
    are checked when a worker or `conveyor schedules list` registers it)."""

    queue: QueueName
    cron: str | None = None
    every: Duration | None = None
    body: Any = None
    tz: str = "UTC"
    name: str | None = None
    catch_up: Duration | None = None

    @model_validator(mode="after")
    def _cron_or_every(self) -> ScheduleConfig:
        if (self.cron is None) == (self.every is None):
            raise ValueError("a schedule takes cron or every, exactly one of them")
        return self


class ConveyorConfig(_Section):
    url: str | None = None
    app: ImportPath | None = None
    queues: list[QueueConfig] = []
    consumers: list[ConsumerConfig] = []
    metrics: MetricsConfig = MetricsConfig()
    topics: list[TopicConfig] = []
    schedules: list[ScheduleConfig] = []

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
        names.update(schedule.queue for schedule in self.schedules)
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


def _section_model(loc: Sequence[int | str]) -> type[BaseModel]:
    """The model whose keys an error's location lists (the top level, a queue or a consumer)."""
    sections: Mapping[str, type[BaseModel]] = {
        "queues": QueueConfig,
        "consumers": ConsumerConfig,
        "metrics": MetricsConfig,
        "schedules": ScheduleConfig,
    }
    return sections.get(str(loc[0]), ConveyorConfig) if len(loc) > 1 else ConveyorConfig


def _describe(error: Any) -> str:
    message = str(error["msg"]).removeprefix("Value error, ")
    loc = error["loc"]
    if error["type"] == "extra_forbidden" and loc:
        key = str(loc[-1])
        known = list(_section_model(loc).model_fields)
        close = difflib.get_close_matches(key, known, n=1)
        message = f"unknown key {key!r}" + (
            f" — did you mean {close[0]!r}?" if close else f" (known keys: {', '.join(known)})"
        )
    where = _location(loc)
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


def config_path(environ: Mapping[str, str] = os.environ) -> Path:
    """The config file a project uses: $CONVEYOR_CONFIG, else ./conveyor.toml."""
    return Path(environ.get(CONFIG_ENV_VAR) or CONFIG_FILE)


def project_url(environ: Mapping[str, str] = os.environ) -> str:
    """The URL when none is given, for `App()` and every command alike: $CONVEYOR_URL, else `url`
    in the config file (./conveyor.toml or $CONVEYOR_CONFIG) when it exists, else the default
    `sqlite:///conveyor.db`. An invalid config file is a ConfigError, not silently skipped."""
    url = environ.get(L.URL_ENV_VAR)
    if url:
        return url
    path = config_path(environ)
    if environ.get(CONFIG_ENV_VAR) or path.exists():
        config = load_config(path)
        if config.url:
            return config.url
    return L.DEFAULT_URL
