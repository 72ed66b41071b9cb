"""App: the object users hold. It binds a URL to an engine (through a Core) and holds the
queues, topics, consumers, lifespan and env. It imports downward only."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from conveyor import limits as L
from conveyor import schedules, topics
from conveyor.backends import Backend, from_url, redact
from conveyor.config import project_url
from conveyor.consumer import ConsumerSpec, Env, Lifespan, MessageBatch, RetryBackoff, Worker
from conveyor.consumer.handlers import checked_handler
from conveyor.consumer.observer import NO_OBSERVER
from conveyor.consumer.rate import RateScope, shared_rate_limits
from conveyor.core import Core
from conveyor.errors import MissingDependency, PartitionCountFixed, QueueNotFound
from conveyor.processes import INTERRUPTED_EXIT_CODE
from conveyor.producer import Queue
from conveyor.types import SYSTEM_CLOCK, Clock, PullConsumer, QueueInfo, QueueSettings, Subscription

if TYPE_CHECKING:
    from conveyor.metrics import MetricsServer, WorkerMetrics

# async def handler(batch, env), or a plain def (run in a thread)
H = TypeVar("H", bound=Callable[[MessageBatch, Env], Any])
#: an ASGI application (scope, receive, send)
ASGIApp = Callable[[Any, Any, Any], Awaitable[None]]


async def _unset_handler(batch: Any, env: Any) -> None:
    raise RuntimeError("placeholder handler called")  # pragma: no cover


class App:
    """A conveyor application: one engine, its queues, consumers, topics and lifespan.

    `App()` with no URL takes it from where the `conveyor` command does: `$CONVEYOR_URL`, else
    `url` in `./conveyor.toml` (or the file `$CONVEYOR_CONFIG` names), else `sqlite:///conveyor.db`
    (a file in the current directory). Connections open on first use; `async with App(url) as
    app:` or `await app.close()` releases them.

    Args:
        url: `memory://`, `sqlite:///path.db`, `postgresql://…` or `redis://…`.
        auto_create: create a queue on first use with default settings; when False an unknown
            queue raises `QueueNotFound`.
        limits: per-app message, batch, delay and retention limits (default: Cloudflare's).
        clock: the time source; `conveyor.testing.FakeClock` makes delays instant on the
            memory and SQLite engines.
        backend: an engine object instead of a URL (for tests and embedding).
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        auto_create: bool = True,
        limits: L.Limits | None = None,
        clock: Clock | None = None,
        backend: Backend | None = None,
    ) -> None:
        clock = clock or SYSTEM_CLOCK
        if backend is None:
            backend = from_url(url or project_url(), clock=clock)
        #: the connected engine and what every handle shares (one level below App)
        self.core = Core(backend, clock=clock, limits=limits, auto_create=auto_create)
        self.consumers: list[ConsumerSpec] = []
        self.env = Env(self.core, self.consumers)
        self._lifespan: Lifespan | None = None
        self._topics: dict[str, topics.Topic] = {}
        #: the schedules every worker of this App runs (`schedule`)
        self.schedules: list[schedules.Schedule] = []
        self._metrics: WorkerMetrics | None = None

    @property
    def backend(self) -> Backend:
        """The engine object (the Backend the URL chose)."""
        return self.core.backend

    @property
    def clock(self) -> Clock:
        """The time source every handle of this App uses."""
        return self.core.clock

    @property
    def limits(self) -> L.Limits:
        """The message, batch, delay and retention limits this App checks."""
        return self.core.limits

    @property
    def auto_create(self) -> bool:
        """Whether a queue is created on first use (else an unknown queue raises `QueueNotFound`)."""
        return self.core.auto_create

    @property
    def url(self) -> str:
        """The engine URL with any password hidden."""
        return redact(self.backend.url)

    def __repr__(self) -> str:
        return f"App({self.url!r})"

    # -- lifecycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> App:
        await self.core.connected()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def connect(self) -> None:
        """Connect now rather than on first use (AppClosed once closed)."""
        await self.core.connected()

    async def close(self) -> None:
        """Release the engine's connections; idempotent. The App cannot be used afterwards."""
        await self.core.close()

    # -- queues ------------------------------------------------------------------------------

    def queue(self, name: str, *, schema: Any = None) -> Queue:
        """A producer handle; with `schema` (a pydantic type) every send is validated first."""
        return Queue(self.core, name, schema)

    def known_queue_names(self) -> list[str]:
        """Queues this App has created or used, and those its consumers read, sorted."""
        return self.env.queues.names()

    async def create_queue(
        self,
        name: str,
        *,
        delivery_delay: float = 0,
        retention_seconds: float = L.DEFAULT_RETENTION_SECONDS,
        dedup_window_seconds: float = L.DEFAULT_DEDUP_WINDOW_SECONDS,
        max_backlog_messages: int | None = None,
        max_backlog_bytes: int | None = None,
        partitions: int = L.DEFAULT_PARTITIONS,
        exist_ok: bool = False,
    ) -> QueueInfo:
        """Create queue `name` (1-63 characters of `A-Z a-z 0-9 _ -`) and return it.

        Args:
            delivery_delay: seconds every message waits before it can be delivered (0-86,400;
                default 0), unless its send names its own delay.
            retention_seconds: messages older than this are deleted (60 s to 14 days; default
                345,600, 4 days).
            dedup_window_seconds: a send naming a dedup id sent to this queue within this many
                seconds stores nothing and returns the first message's id (0-86,400; default
                300; 0 turns deduplication off).
            max_backlog_messages: the most messages the queue may hold, ready, delayed and in
                flight (1 to 2**63-1; default None, no limit): a send past it raises `QueueFull`
                and stores nothing.
            max_backlog_bytes: the same for the bytes of the bodies it holds.
            partitions: how many partitions the queue spreads over (1-64; default 1), fixed at
                creation; a partitioned queue has the same API and semantics
                (docs/concepts/partitions.md).
            exist_ok: return the existing queue instead of raising `QueueAlreadyExists`; its
                settings are left as they are.
        """
        L.validate_queue_name(name)
        settings = QueueSettings(
            delivery_delay=float(L.check_delay("delivery_delay", delivery_delay, self.limits)),
            retention_seconds=float(L.check_retention(retention_seconds, self.limits)),
            dedup_window_seconds=float(L.check_dedup_window(dedup_window_seconds)),
            max_backlog_messages=L.check_backlog_limit("max_backlog_messages", max_backlog_messages),
            max_backlog_bytes=L.check_backlog_limit("max_backlog_bytes", max_backlog_bytes),
            partitions=L.check_partitions(partitions),
        )
        return await self.core.create_queue(name, settings, exist_ok=exist_ok)

    async def get_queue(self, name: str) -> QueueInfo:
        """The queue's settings and state; `QueueNotFound` if it does not exist."""
        L.validate_queue_name(name)
        backend = await self.core.connected()
        info = await backend.get_queue(name)
        if info is None:
            raise QueueNotFound(name)
        return info

    async def update_queue(
        self,
        name: str,
        *,
        delivery_delay: float | None = None,
        retention_seconds: float | None = None,
        dedup_window_seconds: float | None = None,
        max_backlog_messages: int | None = None,
        max_backlog_bytes: int | None = None,
        partitions: int | None = None,
    ) -> QueueInfo:
        """Change a queue's settings; a setting left None keeps its value (limits as in
        `create_queue`). A backlog limit of 0 removes that limit. Lowering a limit below what
        the queue holds deletes nothing: sends are refused until consumers make room. The
        partition count is fixed at creation: naming another raises `PartitionCountFixed`."""
        delay = (
            None if delivery_delay is None else L.check_delay("delivery_delay", delivery_delay, self.limits)
        )
        retention = None if retention_seconds is None else L.check_retention(retention_seconds, self.limits)
        window = None if dedup_window_seconds is None else L.check_dedup_window(dedup_window_seconds)
        if max_backlog_messages:
            L.check_backlog_limit("max_backlog_messages", max_backlog_messages)
        if max_backlog_bytes:
            L.check_backlog_limit("max_backlog_bytes", max_backlog_bytes)
        if partitions is not None:
            L.check_partitions(partitions)
        current = (await self.get_queue(name)).settings
        if partitions is not None and partitions != current.partitions:
            raise PartitionCountFixed(
                f"queue {name!r} has {current.partitions} partition(s), fixed at creation: "
                f"create a new queue with {partitions}"
            )
        settings = dataclasses.replace(
            current,
            delivery_delay=current.delivery_delay if delay is None else float(delay),
            retention_seconds=current.retention_seconds if retention is None else float(retention),
            dedup_window_seconds=current.dedup_window_seconds if window is None else float(window),
            max_backlog_messages=_backlog_change(
                "max_backlog_messages", max_backlog_messages, current.max_backlog_messages
            ),
            max_backlog_bytes=_backlog_change(
                "max_backlog_bytes", max_backlog_bytes, current.max_backlog_bytes
            ),
        )
        return await self.backend.update_queue(name, settings)

    async def set_pull_consumer(self, name: str, consumer: PullConsumer | None) -> QueueInfo:
        """Configure the queue's HTTP pull consumer (`wrangler queues consumer http add`), or
        remove it with None; the queue must exist.

        Pulls that name no batch size or visibility timeout get the consumer's; a pulled message
        retried once it has been delivered `max_retries + 1` times, or leased again after that
        many deliveries (their leases expired), goes to `dead_letter_queue` (created here if
        missing) or is deleted when that is None; a retry that names no delay waits
        `retry_delay`. Limits as a consumer's (`batch_size` 1-100, `max_retries` 0-100,
        `retry_delay` 0-86,400 s, `visibility_timeout` 0.05-43,200 s). Other processes see the
        change within `PULL_CONSUMER_CACHE_SECONDS` (1 s).
        """
        L.validate_queue_name(name)
        if consumer is not None:
            if not isinstance(consumer, PullConsumer):
                raise TypeError(f"consumer must be a conveyor.PullConsumer or None, got {consumer!r}")
            L.check_pull_consumer(name, consumer, self.limits)
            consumer = dataclasses.replace(
                consumer,
                retry_delay=float(consumer.retry_delay),
                visibility_timeout=float(consumer.visibility_timeout),
            )
        current = (await self.get_queue(name)).settings
        if consumer is not None and consumer.dead_letter_queue is not None:
            await self.core.create_queue(consumer.dead_letter_queue, QueueSettings(), exist_ok=True)
        info = await self.backend.update_queue(name, dataclasses.replace(current, pull_consumer=consumer))
        self.core.forget_pull_consumer(name)
        return info

    async def delete_queue(self, name: str) -> bool:
        """Delete the queue and every message in it; False if there was no such queue."""
        L.validate_queue_name(name)
        return await self.core.delete_queue(name)

    async def list_queues(self) -> list[QueueInfo]:
        """Every queue of the engine, by name."""
        backend = await self.core.connected()
        return await backend.list_queues()

    async def ensure_queue(self, name: str) -> None:
        """Create `name` with default settings if it does not exist (or raise when auto_create is off)."""
        await self.core.ensure_queue(name)

    async def replay(self, dead_letter_queue: str, *, to: str, limit: int | None = None) -> int:
        """Move dead letters back to `to`; they keep body and content type and start again at attempt 1."""
        L.validate_queue_name(dead_letter_queue)
        L.validate_queue_name(to)
        if limit is not None:
            L.check_int_range("limit", limit, 1, L.MAX_REPLAY_LIMIT)
        backend = await self.core.connected()
        if await backend.get_queue(dead_letter_queue) is None:
            raise QueueNotFound(dead_letter_queue)
        await self.core.ensure_queue(to)
        return await backend.move_messages(dead_letter_queue, to, limit)

    async def sweep(self) -> int:
        """Delete messages past their queue's retention now (workers also do this every minute)."""
        return await self.core.sweep()

    # -- topics (durable fan-out; the logic lives in conveyor/topics.py) ------------------------

    def topic(self, name: str) -> topics.Topic:
        """A durable topic handle; the same one for the same name, so its counters add up."""
        topic = self._topics.get(name)
        if topic is None:
            topic = self._topics[name] = topics.Topic(self.core, name)
        return topic

    async def subscribe(self, topic: str, *, queue: str, types: Sequence[str] | None = None) -> Subscription:
        """Copy every message published to `topic` whose type is in `types` (any, when None) into
        `queue`; stored in the engine, so it survives restarts. Creates the queue if auto_create."""
        return await topics.subscribe(self.core, topic, queue, types)

    async def unsubscribe(self, topic: str, queue: str) -> bool:
        """Stop copying `topic` into `queue` (the queue and its messages stay); False if there was none."""
        return await topics.unsubscribe(self.core, topic, queue)

    async def list_subscriptions(self, topic: str | None = None) -> list[Subscription]:
        """The subscriptions of `topic`, or of every topic when None."""
        return await topics.list_subscriptions(self.core, topic)

    # -- consumers ---------------------------------------------------------------------------

    def consumer(
        self,
        queue: str,
        *,
        max_batch_size: int = L.DEFAULT_MAX_BATCH_SIZE,
        max_batch_timeout: float = L.DEFAULT_MAX_BATCH_TIMEOUT,
        max_retries: int = L.DEFAULT_MAX_RETRIES,
        retry_delay: float = L.DEFAULT_RETRY_DELAY,
        dead_letter_queue: str | None = None,
        max_concurrency: int | None = None,
        visibility_timeout: float = L.DEFAULT_VISIBILITY_TIMEOUT,
        max_rate: str | float | None = None,
        max_rate_scope: RateScope = "process",
        timeout: float | None = None,
        retry_backoff: RetryBackoff = "fixed",
        retry_backoff_base: float = L.DEFAULT_RETRY_BACKOFF_BASE,
        retry_backoff_cap: float = L.DEFAULT_RETRY_BACKOFF_CAP,
    ) -> Callable[[H], H]:
        """Register `async def handler(batch, env)` as the consumer of `queue` (a decorator).

        One consumer per queue. The settings (against the App's `limits`) and the handler are
        checked here, so a bad value
        raises `LimitExceeded`, and a handler that cannot be called as `handler(batch, env)`
        raises `InvalidHandler`, at the decorator, not at start-up. A plain `def` handler is
        supported: it runs in a worker thread, so it may block. A handler that returns acks every
        message it did not mark; one that raises retries them.

        Args:
            queue: the queue to consume.
            max_batch_size: most messages per batch (1-100; default 10).
            max_batch_timeout: seconds to wait for a batch to fill after its first message
                (0-60; default 5); 0 hands over at once.
            max_retries: retries before a message is dead-lettered, so `max_retries + 1`
                deliveries (0-100; default 3).
            retry_delay: seconds before a retried message is delivered again, unless
                `Message.retry(delay_seconds=)` says otherwise (0-86,400; default 0); the fixed
                delay of `retry_backoff="fixed"`.
            dead_letter_queue: where messages go after the last retry or `dead_letter()`;
                None (the default) deletes them with a WARNING log line.
            max_concurrency: batches of this consumer running at once (1-250); None (the
                default) autoscales from 1 up to 10 while the backlog grows.
            visibility_timeout: seconds a delivered message stays leased (0.05-43,200; default
                30); the worker renews the lease while the handler runs.
            max_rate: the most messages a second this consumer leases ("100/s", "600/m",
                "10/h", or a number per second; 0.001-1,000,000 a second); None (the default)
                has no limit. Batches shrink and wait to keep to it.
            max_rate_scope: "process" (the default): each worker process keeps its own bucket,
                so N workers lease up to N times the rate; "global": one bucket in the engine
                shared by every worker of this queue (PostgreSQL, Redis and NATS).
            timeout: the handler's time limit in seconds (0.01-43,200; default None: none). A
                handler still running after it is cancelled; the messages it did not mark are
                retried with the error "timed out after N s" (the delivery counts as an
                attempt) and its slot goes to the next batch.
            retry_backoff: `"fixed"` (default: wait `retry_delay`) or `"exponential"`: the retry
                after delivery n waits a random time between 0 and
                `min(retry_backoff_cap, retry_backoff_base * 2 ** (n - 1))` ("full jitter").
                `Message.retry(delay_seconds=)` still wins.
            retry_backoff_base: the first retry's longest wait, in seconds (0-86,400; default 1).
            retry_backoff_cap: the longest wait of any retry, in seconds (0-86,400; default 300).
        """
        settings = ConsumerSpec(
            queue=queue,
            handler=_unset_handler,
            max_batch_size=max_batch_size,
            max_batch_timeout=max_batch_timeout,
            max_retries=max_retries,
            retry_delay=retry_delay,
            dead_letter_queue=dead_letter_queue,
            max_concurrency=max_concurrency,
            visibility_timeout=visibility_timeout,
            max_rate=max_rate,
            max_rate_scope=max_rate_scope,
            timeout=timeout,
            retry_backoff=retry_backoff,
            retry_backoff_base=retry_backoff_base,
            retry_backoff_cap=retry_backoff_cap,
            limits=self.limits,
        )
        if max_rate is not None and max_rate_scope == "global":
            shared_rate_limits(self.backend)  # a clear error now, not at the worker's start

        def register(handler: H) -> H:
            if any(spec.queue == queue for spec in self.consumers):
                raise ValueError(f"queue {queue!r} already has a consumer")
            runnable = checked_handler(queue, handler)
            self.consumers.append(dataclasses.replace(settings, handler=runnable))
            return handler

        return register

    def schedule(
        self,
        cron: str | None = None,
        *,
        queue: str,
        every: float | str | None = None,
        body: Any = None,
        tz: str = "UTC",
        name: str | None = None,
        catch_up: float | str | None = None,
    ) -> schedules.Schedule:
        """Send a message to `queue` on a cron expression or `every` N seconds, from every running
        worker of this App (`app.run`, `run_consumers`, `conveyor worker`), exactly once per tick
        however many workers run. Usable as a call or as a decorator (which leaves the function
        as it is, e.g. the queue's consumer).

        Args:
            cron: a cron expression (`"*/5 * * * *"`; a sixth field first is seconds), read in `tz`.
            queue: where the messages go (created on first use, as by a send).
            every: instead of `cron`: seconds (or "30s", "5m", "1h") between ticks, at multiples
                of it since the epoch (1 s to 366 days).
            body: the message body (JSON); default `{"schedule": name, "tick": ISO time in UTC}`.
            tz: the IANA time zone of the cron expression (default "UTC"); daylight saving time
                is handled by the cron library: a tick in the hour skipped in spring runs when
                it ends, one in the hour repeated in autumn runs once.
            name: names the schedule in its messages' dedup ids (`schedule:<name>:<tick epoch>`)
                and in `conveyor schedules list`; default `<queue>/<timing>`.
            catch_up: a worker that starts sends the latest tick if it is at most this old
                (default 60 s; never more than one missed tick). The queue's dedup window must be
                at least this plus 30 s (checked when a worker starts).

        Raises `InvalidSchedule` for a bad cron expression, time zone, interval or a name in use,
        and `BodyNotSerializable` for a body JSON cannot carry.
        """
        made = schedules.make_schedule(
            cron, queue=queue, every=every, body=body, tz=tz, name=name, catch_up=catch_up
        )
        schedules.check_unique(self.schedules, made)
        self.schedules.append(made)
        return made

    def lifespan(
        self, function: Callable[[Env], AsyncIterator[None]]
    ) -> Callable[[Env], AsyncIterator[None]]:
        """Register an async generator that sets up `env` resources for the worker and tears them down."""
        self._lifespan = contextlib.asynccontextmanager(function)
        return function

    def worker(
        self,
        consumers: Sequence[ConsumerSpec] | None = None,
        *,
        shutdown_grace: float = L.DEFAULT_SHUTDOWN_GRACE_SECONDS,
    ) -> Worker:
        """A Worker running `consumers` (default: every registered one) with this app's env and lifespan."""
        return Worker(
            self.core,
            self.consumers if consumers is None else consumers,
            self.env,
            lifespan=self._lifespan,
            shutdown_grace=shutdown_grace,
            observer=self._metrics or NO_OBSERVER,  # the App's metrics once asked for (`metrics`)
            background=self._scheduler_jobs(),
        )

    def _scheduler_jobs(self) -> list[tuple[str, Callable[[asyncio.Event], Awaitable[None]]]]:
        if not self.schedules:
            return []
        return [("scheduler", schedules.Scheduler(self.core, self.schedules).run)]

    async def run_worker(
        self,
        *,
        shutdown_grace: float = L.DEFAULT_SHUTDOWN_GRACE_SECONDS,
        metrics_port: int | None = None,
        metrics_host: str = L.DEFAULT_METRICS_HOST,
    ) -> int | None:
        """Run every consumer until SIGTERM or SIGINT (Ctrl-C), let the batches in flight finish,
        then close the app: what `conveyor worker` runs. Returns the signal that stopped it. With
        `metrics_port`, serves the worker's metrics at http://metrics_host:metrics_port/metrics
        meanwhile (see `serve_metrics`)."""
        try:
            async with self._metrics_served(metrics_port, metrics_host):
                worker = self.worker(shutdown_grace=shutdown_grace)
                await worker.run_until_signalled()
                return worker.stopped_by
        finally:
            await self.close()

    def run(
        self, *, until_idle: bool = False, shutdown_grace: float = L.DEFAULT_SHUTDOWN_GRACE_SECONDS
    ) -> int:
        """Run every registered consumer from code with no event loop (a script), then close the app;
        returns how many messages were handled.

        With `until_idle=True` it returns once the consumers' queues hold nothing ready or in
        flight (delayed messages stay), handing a partial batch over as soon as its queue runs dry
        rather than after `max_batch_timeout`: a script sends, handles and ends. Otherwise it runs
        until SIGTERM or Ctrl-C. Either way SIGTERM and Ctrl-C stop it gracefully (batches in
        flight finish within `shutdown_grace` seconds); after Ctrl-C it writes one line on stderr
        and exits with code 130 (`SystemExit`), without a traceback.

        One line on stderr first names the engine (and a SQLite file's full path) and the queues.
        """
        consumers = (
            [dataclasses.replace(spec, max_batch_timeout=0) for spec in self.consumers]
            if until_idle
            else self.consumers
        )
        queues = ", ".join(spec.queue for spec in consumers)
        until = "until its queues are empty" if until_idle else "until SIGTERM or Ctrl-C"
        print(f"conveyor: consumers of {queues} on {self._where()}, {until}", file=sys.stderr, flush=True)

        async def main() -> tuple[int, int | None]:
            try:
                worker = self.worker(consumers, shutdown_grace=shutdown_grace)
                handled = await worker.run_until_signalled(until_idle=until_idle)
                return handled, worker.stopped_by
            finally:
                await self.close()

        try:
            handled, stopped_by = asyncio.run(main())
        except KeyboardInterrupt:  # Ctrl-C before the worker's own handler was in place
            stopped_by, handled = signal.SIGINT, 0
        if stopped_by == signal.SIGINT:
            print("conveyor: stopped (Ctrl-C)", file=sys.stderr, flush=True)
            raise SystemExit(INTERRUPTED_EXIT_CODE)
        return handled

    def _where(self) -> str:
        """The engine URL, with a SQLite file's full path (so a user knows where it is)."""
        url = self.url
        if url.startswith("sqlite:///"):
            path = Path(url.removeprefix("sqlite:///").split("?", 1)[0])
            if str(path) != ":memory:":
                return f"{url} ({path.resolve()})"
        return url

    @contextlib.asynccontextmanager
    async def running_lifespan(self) -> AsyncIterator[Env]:
        """Run the registered lifespan around the block (a no-op without one); yields `env`."""
        if self._lifespan is None:
            yield self.env
            return
        async with self._lifespan(self.env):
            yield self.env

    async def run_consumers(
        self,
        *,
        shutdown_grace: float = L.DEFAULT_SHUTDOWN_GRACE_SECONDS,
        stop: asyncio.Event | None = None,
        metrics_port: int | None = None,
        metrics_host: str = L.DEFAULT_METRICS_HOST,
    ) -> None:
        """Run every registered consumer until cancelled or until `stop` is set, then shut down gracefully.

        Shutting down stops leasing, releases messages not yet handed to a handler, and lets
        running batches finish within `shutdown_grace` seconds (default 30) before releasing
        the rest. `conveyor worker` runs `run_worker`, which does this until SIGTERM or Ctrl-C.
        With `metrics_port`, the worker's metrics are served meanwhile (see `serve_metrics`).
        """
        async with self._metrics_served(metrics_port, metrics_host):
            await self.worker(shutdown_grace=shutdown_grace).run(stop=stop)

    # -- worker metrics (conveyor/metrics/; needs prometheus-client) -------------------------

    @property
    def metrics(self) -> WorkerMetrics:
        """The Prometheus metrics of this App's workers, in a registry of their own (created on
        first use; `MissingDependency` without prometheus-client, the `metrics` extra).

        Workers started after the first use report into it: ask for it (or for `metrics_app`,
        `serve_metrics`) before `run_consumers`. docs/metrics.md lists every series.
        """
        if self._metrics is None:
            try:
                from conveyor.metrics import WorkerMetrics
            except ImportError as exc:
                raise MissingDependency(
                    f"worker metrics need prometheus-client: pip install 'conveyor[metrics]' ({exc})"
                ) from exc
            self._metrics = WorkerMetrics(self.core)
        return self._metrics

    def metrics_app(self) -> ASGIApp:
        """An ASGI app answering every GET with this App's worker metrics in Prometheus' text
        format: mount it at /metrics in a web app whose lifespan runs the consumers."""
        from prometheus_client import make_asgi_app

        app: ASGIApp = make_asgi_app(self.metrics.served)
        return app

    def serve_metrics(self, port: int, host: str = L.DEFAULT_METRICS_HOST) -> MetricsServer:
        """Serve this App's worker metrics at http://host:port/metrics on a thread of its own
        until the returned server's `close()`; port 0 picks a free one (`server.port`).
        `MetricsServerError` (one line) when the port is taken."""
        L.check_int_range("metrics_port", port, 0, L.MAX_PORT)
        from conveyor.metrics import MetricsServer

        return MetricsServer(self.metrics.served, port=port, host=host)

    @contextlib.asynccontextmanager
    async def _metrics_served(self, port: int | None, host: str) -> AsyncIterator[None]:
        if port is None:
            yield
            return
        server = self.serve_metrics(port, host)
        try:
            yield
        finally:
            await server.aclose()


def _backlog_change(what: str, value: int | None, current: int | None) -> int | None:
    """An update's backlog limit: `current` for None, None (no limit) for 0, else the checked limit."""
    if value is None:
        return current
    if value == 0 and not isinstance(value, bool):
        return None
    return L.check_backlog_limit(what, value)
