"""Applying conveyor.toml (parsed and validated by conveyor/config.py): importing handlers and apps,
registering the declared consumers on an App, creating or updating the declared queues and making
the declared topic subscriptions."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from conveyor.admin import subscribe
from conveyor.app import App
from conveyor.config import (
    CONFIG_FILE,
    ConfigError,
    ConsumerConfig,
    ConveyorConfig,
    MetricsConfig,
    QueueConfig,
    SubscriptionConfig,
    TopicConfig,
    import_path,
    load_config,
    parse_config,
)
from conveyor.errors import BodyNotSerializable, InvalidHandler, InvalidSchedule
from conveyor.topics import normalize_types
from conveyor.types import QueueInfo

__all__ = [
    "CONFIG_FILE",
    "ConfigError",
    "ConsumerConfig",
    "ConveyorConfig",
    "MetricsConfig",
    "QueueConfig",
    "SubscriptionConfig",
    "TopicConfig",
    "apply_queues",
    "apply_topics",
    "import_object",
    "load_app",
    "load_config",
    "parse_config",
    "register_consumers",
]


# -- applying it ------------------------------------------------------------------------------


def import_object(path: str, *, search: Sequence[Path] = ()) -> Any:
    """Import `module:attribute` (dots allowed in both) with the CWD and `search` on sys.path."""
    import_path(path)
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
    for index, consumer in enumerate(config.consumers):
        handler = import_object(consumer.handler, search=search)
        options = consumer.model_dump(exclude={"queue", "handler"})
        try:
            app.consumer(consumer.queue, **options)(handler)
        except InvalidHandler as exc:
            raise InvalidHandler(
                f"{CONFIG_FILE}: consumers[{index}].handler {consumer.handler!r}: {exc}"
            ) from None


def register_schedules(app: App, config: ConveyorConfig) -> None:
    """Register every `[[schedules]]` entry on `app`; an error names the entry."""
    for index, schedule in enumerate(config.schedules):
        options = schedule.model_dump()
        try:
            app.schedule(options.pop("cron"), **options)
        except (InvalidSchedule, BodyNotSerializable) as exc:
            raise type(exc)(f"{CONFIG_FILE}: schedules[{index}]: {exc}") from None


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
                dedup_window_seconds=queue.dedup_window_seconds,
                max_backlog_messages=queue.max_backlog_messages,
                max_backlog_bytes=queue.max_backlog_bytes,
                partitions=queue.partitions,
                exist_ok=True,
            )
            changed.append(queue.name)
        elif _settings(existing) != queue.settings():
            await app.update_queue(
                queue.name,
                delivery_delay=queue.delivery_delay,
                retention_seconds=queue.retention_seconds,
                dedup_window_seconds=queue.dedup_window_seconds,
                # the file says the whole truth: a limit it leaves out is removed (0)
                max_backlog_messages=queue.max_backlog_messages or 0,
                max_backlog_bytes=queue.max_backlog_bytes or 0,
                partitions=queue.partitions,  # fixed at creation: another count is an error
            )
            changed.append(queue.name)
        # the file says the whole truth here too: a queue declared without one has none
        had = None if existing is None else existing.settings.pull_consumer
        if had != queue.consumer():
            await app.set_pull_consumer(queue.name, queue.consumer())
            if queue.name not in changed:
                changed.append(queue.name)
    return changed


def _settings(info: QueueInfo) -> tuple[float, float, float, int | None, int | None, int]:
    settings = info.settings
    return (
        settings.delivery_delay,
        settings.retention_seconds,
        settings.dedup_window_seconds,
        settings.max_backlog_messages,
        settings.max_backlog_bytes,
        settings.partitions,
    )


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
