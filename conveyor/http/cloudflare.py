"""The Cloudflare-compatible mount: Cloudflare Queues' REST API at
`/client/v4/accounts/{account_id}/queues/...`, so Cloudflare's own SDKs work against conveyor with
only their base URL (`http://host:8787/client/v4`) and token changed.

Queues are addressed by `queue_id` (a stable id derived from the name: cloudflare_schemas.queue_id)
or by name; any `account_id` is accepted (a conveyor server is one account). Errors carry
Cloudflare's numeric codes (cloudflare_codes.py). docs/http.md lists what differs from Cloudflare.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from conveyor import limits as L
from conveyor.app import App
from conveyor.errors import QueueNotFound
from conveyor.http import cloudflare_schemas as cf
from conveyor.http import responses
from conveyor.http.body import BodyReader
from conveyor.http.envelope import CONSUMER_NOT_FOUND, INVALID_INPUT, ApiError, ok
from conveyor.http.figures import QueueFigures
from conveyor.http.long_poll import LongPolls
from conveyor.http.metrics import ApiMetrics
from conveyor.http.operations import Endpoint, Operation
from conveyor.producer import Queue
from conveyor.types import QueueInfo

PREFIX = "/client/v4/accounts/{account_id}/queues"
INVALID_QUEUE_ID = "invalid_queue_id"


class QueueIds:
    """queue_id -> name, learnt from the queues this server has shown or listed."""

    def __init__(self, app: App) -> None:
        self.app = app
        self._names: dict[str, str] = {}

    def id_of(self, name: str) -> str:
        identifier = cf.queue_id(name)
        self._names[identifier] = name
        return identifier

    async def name_of(self, value: str) -> str:
        """The queue a path names, by id or by name (an unknown name is the operation's 404)."""
        name = self._names.get(value)
        if name is not None:
            return name
        if cf.QUEUE_ID_PATTERN.fullmatch(value):
            for info in await self.app.list_queues():
                self.id_of(info.name)
            name = self._names.get(value)
            if name is not None:
                return name
        if L.QUEUE_NAME_PATTERN.fullmatch(value):
            return value
        raise ApiError(400, INVALID_QUEUE_ID, f"{value[:80]!r} is neither a queue_id nor a queue name")


class CloudflareApi:
    """The endpoints of Cloudflare Queues' REST API for one App; `operations()` declares them."""

    def __init__(
        self, app: App, metrics: ApiMetrics, figures: QueueFigures, bodies: BodyReader, long_polls: LongPolls
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.figures = figures
        self.bodies = bodies
        self.long_polls = long_polls
        self.ids = QueueIds(app)
        self._purged_at: dict[str, float] = {}

    def operations(self) -> list[Operation]:
        R, tags = responses, ("cloudflare",)
        one, messages = PREFIX + "/{queue_id}", PREFIX + "/{queue_id}/messages"

        def op(method: str, path: str, endpoint: Endpoint, summary: str, **options: Any) -> Operation:
            return Operation(method, path, endpoint, summary, tags=tags, **options)

        return [
            op("GET", PREFIX, self.list_queues, "List queues", result=list[R.CloudflareQueue]),
            op(
                "POST",
                PREFIX,
                self.create_queue,
                "Create a queue",
                body=cf.QueueCreateParams,
                result=R.CloudflareQueue,
            ),
            op("GET", one, self.get_queue, "Get a queue", result=R.CloudflareQueue),
            op(
                "PUT",
                one,
                self.update_queue,
                "Update a queue (every setting)",
                body=cf.QueueUpdateParams,
                result=R.CloudflareQueue,
            ),
            op(
                "PATCH",
                one,
                self.edit_queue,
                "Edit a queue (the settings given)",
                body=cf.QueueUpdateParams,
                result=R.CloudflareQueue,
            ),
            op("GET", one + "/metrics", self.queue_metrics, "A queue's metrics", result=R.CloudflareMetrics),
            op(
                "POST",
                one + "/purge",
                self.purge,
                "Purge a queue",
                body=cf.PurgeStartParams,
                result=R.CloudflareQueue,
            ),
            op("GET", one + "/purge", self.purge_status, "The last purge", result=R.CloudflarePurgeStatus),
            op(
                "POST",
                messages,
                self.push,
                "Push a message",
                body=cf.MessagePushParams,
                result=R.CloudflarePushed,
            ),
            op(
                "POST",
                messages + "/batch",
                self.bulk_push,
                "Push messages",
                body=cf.MessageBulkPushParams,
                result=R.CloudflarePushed,
            ),
            op(
                "POST",
                messages + "/pull",
                self.pull,
                "Pull messages",
                body=cf.MessagePullParams,
                body_optional=True,
                result=R.CloudflarePulled,
            ),
            op(
                "POST",
                messages + "/ack",
                self.ack,
                "Acknowledge or retry messages",
                body=cf.MessageAckParams,
                body_optional=True,
                result=R.CloudflareAcked,
            ),
            op(
                "POST",
                messages + "/peek",
                self.peek,
                "Peek at messages",
                body=cf.MessagePeekParams,
                body_optional=True,
                result=R.CloudflarePeeked,
            ),
            *self.consumer_operations(op),
            # last: the run of schemathesis goes in this order, and a deleted queue answers 404 after
            op("DELETE", one, self.delete_queue, "Delete a queue"),
        ]

    def consumer_operations(self, op: Callable[..., Operation]) -> list[Operation]:
        R = responses
        consumers = PREFIX + "/{queue_id}/consumers"
        one = consumers + "/{consumer_id}"
        return [
            op(
                "POST",
                consumers,
                self.create_consumer,
                "Create the queue's HTTP pull consumer",
                body=cf.ConsumerParams,
                result=R.CloudflareConsumer,
            ),
            op(
                "GET",
                consumers,
                self.list_consumers,
                "The queue's consumers",
                result=list[R.CloudflareConsumer],
            ),
            op("GET", one, self.get_consumer, "A consumer", result=R.CloudflareConsumer),
            op(
                "PUT",
                one,
                self.update_consumer,
                "Replace the queue's HTTP pull consumer (or create it)",
                body=cf.ConsumerParams,
                result=R.CloudflareConsumer,
            ),
            op("DELETE", one, self.delete_consumer, "Delete a consumer"),
        ]

    async def _queue(self, request: Request) -> Queue:
        return self.app.queue(await self.ids.name_of(request.path_params["queue_id"]))

    def _document(self, info: QueueInfo) -> dict[str, Any]:
        self.ids.id_of(info.name)
        return cf.queue_document(info)

    async def _metadata(self, queue: Queue) -> dict[str, Any]:
        figures = await self.figures.of(queue.name)  # read in the background: never a count here
        return {"metrics": figures.metrics_document()}

    # -- queues ----------------------------------------------------------------------------------

    async def list_queues(self, request: Request) -> Response:
        infos = sorted(await self.app.list_queues(), key=lambda info: info.name)
        return ok([self._document(info) for info in infos])

    async def create_queue(self, request: Request) -> Response:
        body = await self.bodies.parse(request, cf.QueueCreateParams)
        settings = body.settings or cf.SettingsParams()
        name = L.validate_queue_name(body.queue_name)
        await self.app.create_queue(
            name,
            delivery_delay=0 if settings.delivery_delay is None else settings.delivery_delay,
            retention_seconds=(
                L.DEFAULT_RETENTION_SECONDS
                if settings.message_retention_period is None
                else settings.message_retention_period
            ),
        )
        if settings.delivery_paused:
            await self.app.queue(name).pause()
        return ok(self._document(await self.app.get_queue(name)))

    async def get_queue(self, request: Request) -> Response:
        queue = await self._queue(request)
        return ok(self._document(await self.app.get_queue(queue.name)))

    async def update_queue(self, request: Request) -> Response:
        """PUT: every setting is set; one left out takes its default (Cloudflare: no partial update)."""
        queue = await self._queue(request)
        body = await self.bodies.parse(request, cf.QueueUpdateParams)
        return await self._change(queue, body, cf.SettingsParams(delivery_delay=0, delivery_paused=False))

    async def edit_queue(self, request: Request) -> Response:
        """PATCH: only the settings given change."""
        queue = await self._queue(request)
        body = await self.bodies.parse(request, cf.QueueUpdateParams)
        return await self._change(queue, body, cf.SettingsParams())

    async def _change(
        self, queue: Queue, body: cf.QueueUpdateParams, defaults: cf.SettingsParams
    ) -> Response:
        await self.app.get_queue(queue.name)
        if body.queue_name is not None and body.queue_name != queue.name:
            raise ApiError(400, INVALID_INPUT, f"queue_name: a queue cannot be renamed ({queue.name!r})")
        given = body.settings or cf.SettingsParams()
        merged = defaults.model_copy(update=given.model_dump(exclude_none=True))
        full = defaults.delivery_paused is not None  # PUT
        retention = merged.message_retention_period
        if retention is None and full:
            retention = float(L.DEFAULT_RETENTION_SECONDS)
        await self.app.update_queue(
            queue.name, delivery_delay=merged.delivery_delay, retention_seconds=retention
        )
        if merged.delivery_paused is not None:
            await (queue.pause() if merged.delivery_paused else queue.resume())
        return ok(self._document(await self.app.get_queue(queue.name)))

    async def delete_queue(self, request: Request) -> Response:
        queue = await self._queue(request)
        deleted = await self.app.delete_queue(queue.name)
        self.figures.forget(queue.name)
        if not deleted:
            raise QueueNotFound(queue.name)
        return ok(None)

    async def queue_metrics(self, request: Request) -> Response:
        queue = await self._queue(request)
        return ok((await self.figures.of(queue.name)).metrics_document())

    async def purge(self, request: Request) -> Response:
        queue = await self._queue(request)
        # no body is {}: refused, as the confirmation is missing
        body = await self.bodies.parse(request, cf.PurgeStartParams, optional=True)
        if not body.delete_messages_permanently:
            raise ApiError(
                400, INVALID_INPUT, "delete_messages_permanently: set it to true to confirm the purge"
            )
        await self.app.get_queue(queue.name)
        self._purged_at[queue.name] = time.time()
        await queue.purge()
        self.figures.forget(queue.name)
        return ok(self._document(await self.app.get_queue(queue.name)))

    async def purge_status(self, request: Request) -> Response:
        queue = await self._queue(request)
        await self.app.get_queue(queue.name)
        started = self._purged_at.get(queue.name)
        # a purge here is done before its answer: the last one has always completed
        return ok(
            {
                "started_at": None if started is None else cf.timestamp(started),
                "completed": None if started is None else "true",
            }
        )

    # -- consumers (HTTP pull only) ---------------------------------------------------------------

    async def _consumer_queue(self, request: Request) -> QueueInfo:
        """The queue of a `.../consumers/{consumer_id}` path (404 for another consumer_id)."""
        queue = await self._queue(request)
        info = await self.app.get_queue(queue.name)
        if request.path_params["consumer_id"] != cf.consumer_id(queue.name):
            raise ApiError(404, CONSUMER_NOT_FOUND, f"queue {queue.name!r} has no such consumer")
        return info

    async def _set_consumer(self, queue: Queue, request: Request) -> Response:
        body = await self.bodies.parse(request, cf.ConsumerParams)
        consumer = body.to_consumer()
        await self.app.get_queue(queue.name)  # a missing queue is its 404, before the DLQ is made
        info = await self.app.set_pull_consumer(queue.name, consumer)
        return ok(cf.consumer_document(info))

    async def create_consumer(self, request: Request) -> Response:
        """POST: the queue's HTTP pull consumer (replacing one it had: a queue has at most one)."""
        return await self._set_consumer(await self._queue(request), request)

    async def list_consumers(self, request: Request) -> Response:
        queue = await self._queue(request)
        document = cf.consumer_document(await self.app.get_queue(queue.name))
        return ok([] if document is None else [document])

    async def get_consumer(self, request: Request) -> Response:
        document = cf.consumer_document(await self._consumer_queue(request))
        if document is None:
            raise ApiError(404, CONSUMER_NOT_FOUND, "the queue has no HTTP pull consumer")
        return ok(document)

    async def update_consumer(self, request: Request) -> Response:
        info = await self._consumer_queue(request)
        return await self._set_consumer(self.app.queue(info.name), request)

    async def delete_consumer(self, request: Request) -> Response:
        info = await self._consumer_queue(request)
        if info.settings.pull_consumer is None:
            raise ApiError(404, CONSUMER_NOT_FOUND, "the queue has no HTTP pull consumer")
        await self.app.set_pull_consumer(info.name, None)
        return ok(None)

    # -- messages --------------------------------------------------------------------------------

    async def push(self, request: Request) -> Response:
        queue = await self._queue(request)
        message = (await self.bodies.parse(request, cf.MessagePushParams)).to_request()
        await queue.send(message.body, delay_seconds=message.delay_seconds, content_type=message.content_type)
        self.metrics.count(queue.name, "send", 1)
        return ok({"metadata": await self._metadata(queue)})

    async def bulk_push(self, request: Request) -> Response:
        queue = await self._queue(request)
        body = await self.bodies.parse(request, cf.MessageBulkPushParams)
        # every message is encoded and checked before any is written: a bad one sends none
        ids = await queue.send_batch(
            [message.to_request() for message in body.messages], delay_seconds=body.delay_seconds
        )
        self.metrics.count(queue.name, "send", len(ids))
        return ok({"metadata": await self._metadata(queue)})

    async def pull(self, request: Request) -> Response:
        queue = await self._queue(request)
        body = await self.bodies.parse(request, cf.MessagePullParams, optional=True)
        pulled = await self.long_polls.pull(
            queue, body.batch_size, body.visibility_timeout_seconds(), body.wait_ms
        )
        figures = await self.figures.of(queue.name)
        self.metrics.count(queue.name, "pull", len(pulled))
        return ok(
            {
                "message_backlog_count": figures.unacknowledged,
                "messages": [cf.pulled_document(message) for message in pulled],
                "metadata": {"metrics": figures.metrics_document()},
            }
        )

    async def ack(self, request: Request) -> Response:
        queue = await self._queue(request)
        body = await self.bodies.parse(request, cf.MessageAckParams, optional=True)
        result = await queue.ack(
            [ack.lease_id for ack in body.acks],
            [(retry.lease_id, retry.delay_seconds) for retry in body.retries],
        )
        if result.stale or not (body.acks or body.retries):
            # engines differ on settling in a missing queue; a stale lease is rare, so look then
            await self.app.get_queue(queue.name)
        self.metrics.count(queue.name, "ack", result.ack_count)
        self.metrics.count(queue.name, "retry", result.retry_count)
        warnings = dict(zip(result.stale, result.warnings, strict=True))
        return ok({"ackCount": result.ack_count, "retryCount": result.retry_count, "warnings": warnings})

    async def peek(self, request: Request) -> Response:
        queue = await self._queue(request)
        body = await self.bodies.parse(request, cf.MessagePeekParams, optional=True)
        await self.app.get_queue(queue.name)
        return ok(
            {"messages": [cf.peeked_document(message) for message in await queue.peek(body.batch_size)]}
        )
