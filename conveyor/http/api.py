"""The JSON API, shaped like Cloudflare Queues' HTTP API: messages (send, batch, pull, ack, peek,
replay) and queue management. Each endpoint validates its input, calls the public API, and
answers in the envelope; a request refused for bad input has changed nothing.
"""

from __future__ import annotations

import asyncio

from starlette.requests import Request
from starlette.responses import Response

from conveyor import admin
from conveyor import limits as L
from conveyor.admin import message_document, queue_document
from conveyor.app import App
from conveyor.errors import BackendUnavailable, MessageNotFound, QueueNotFound
from conveyor.http import responses, schemas
from conveyor.http.body import BodyReader
from conveyor.http.envelope import CONSUMER_NOT_FOUND, INVALID_INPUT, ApiError, ok
from conveyor.http.figures import QueueFigures
from conveyor.http.long_poll import LongPolls
from conveyor.http.metrics import CONTENT_TYPE, ApiMetrics
from conveyor.http.operations import Operation
from conveyor.producer import Queue

# How long /healthz waits for the engine before it answers 503.
HEALTH_TIMEOUT_SECONDS = 5.0
DEFAULT_PEEK_LIMIT = 10


class QueueApi:
    """The endpoints of one App; `operations()` declares them."""

    def __init__(
        self, app: App, metrics: ApiMetrics, figures: QueueFigures, bodies: BodyReader, long_polls: LongPolls
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.figures = figures
        self.bodies = bodies
        self.long_polls = long_polls

    def operations(self) -> list[Operation]:
        R = responses
        one, messages = "/queues/{name}", "/queues/{name}/messages"
        query_limit = {
            "limit": ({"type": "integer", "minimum": 1, "maximum": 1_000}, "how many (default 10)")
        }
        return [
            Operation(
                "GET", "/healthz", self.healthz, "Whether the engine answers", result=R.Health, public=True
            ),
            Operation("GET", "/metrics", self.prometheus, "Prometheus metrics", media_type=CONTENT_TYPE),
            Operation("GET", "/queues", self.list_queues, "Every queue", result=list[R.QueueDocument]),
            Operation(
                "GET",
                "/workers",
                self.list_workers,
                "The workers seen in the last 15 s (their last heartbeats)",
                result=list[R.WorkerDocument],
            ),
            Operation(
                "POST",
                "/queues",
                self.create_queue,
                "Create a queue",
                body=schemas.CreateQueue,
                result=R.QueueDocument,
                status=201,
            ),
            Operation("GET", one, self.get_queue, "A queue and its counts", result=R.QueueDocument),
            Operation(
                "PATCH",
                one,
                self.update_queue,
                "Change a queue's settings",
                body=schemas.UpdateQueue,
                result=R.QueueDocument,
            ),
            Operation("POST", one + "/purge", self.purge, "Delete every message of a queue", result=R.Purged),
            Operation("POST", one + "/pause", self.pause, "Pause delivery", result=R.QueueDocument),
            Operation("POST", one + "/resume", self.resume, "Resume delivery", result=R.QueueDocument),
            Operation("POST", messages, self.send, "Send a message", body=schemas.SendMessage, result=R.Sent),
            Operation(
                "GET",
                messages,
                self.peek,
                "Look at messages without leasing them",
                result=list[R.PeekedMessage],
                query=query_limit,
            ),
            Operation(
                "POST",
                messages + "/batch",
                self.send_batch,
                "Send up to 100 messages at once",
                body=schemas.SendBatch,
                result=R.SentBatch,
            ),
            Operation(
                "POST",
                messages + "/pull",
                self.pull,
                "Lease messages (a pull consumer)",
                body=schemas.Pull,
                body_optional=True,
                result=R.Pulled,
            ),
            Operation(
                "POST",
                messages + "/ack",
                self.ack,
                "Acknowledge or retry pulled messages",
                body=schemas.AckRequest,
                result=R.Acked,
            ),
            Operation(
                "POST",
                messages + "/extend",
                self.extend,
                "Extend the leases of pulled messages",
                body=schemas.ExtendRequest,
                result=R.Extended,
            ),
            Operation(
                "POST",
                messages + "/replay",
                self.replay,
                "Move this dead-letter queue's messages back",
                body=schemas.Replay,
                result=R.Replayed,
            ),
            Operation(
                "DELETE",
                messages + "/{message_id}",
                self.delete_message,
                "Delete one message by id (409 while a consumer holds it)",
                result=R.MessageDeleted,
            ),
            Operation(
                "GET",
                one + "/consumers/http",
                self.get_pull_consumer,
                "The queue's HTTP pull consumer settings",
                result=R.PullConsumerDocument,
            ),
            Operation(
                "PUT",
                one + "/consumers/http",
                self.set_pull_consumer,
                "Configure the queue's HTTP pull consumer (every setting; one left out takes its default)",
                body=schemas.HttpConsumer,
                result=R.PullConsumerDocument,
            ),
            Operation(
                "DELETE",
                one + "/consumers/http",
                self.remove_pull_consumer,
                "Remove the queue's HTTP pull consumer settings",
                result=R.PullConsumerDeleted,
            ),
            *self.topic_operations(),
            # last: the run of schemathesis goes in this order, and a deleted queue answers 404 after
            Operation("DELETE", one, self.delete_queue, "Delete a queue and its messages", result=R.Deleted),
        ]

    def topic_operations(self) -> list[Operation]:
        R = responses
        topic = "/topics/{topic}"
        return [
            Operation(
                "GET",
                "/topics",
                self.list_topics,
                "Every topic and its subscriptions",
                result=list[R.TopicDocument],
            ),
            Operation(
                "POST",
                "/topics",
                self.create_topic,
                "Create a topic with its first subscriptions (missing queues are created)",
                body=schemas.CreateTopic,
                result=R.TopicDocument,
                status=201,
            ),
            Operation("GET", topic, self.get_topic, "A topic and its subscriptions", result=R.TopicDocument),
            Operation(
                "POST",
                topic + "/subscriptions",
                self.subscribe,
                "Subscribe a queue (created if missing); again, to change its type filter",
                body=schemas.Subscribe,
                result=R.SubscriptionDocument,
            ),
            Operation(
                "POST",
                topic + "/messages",
                self.publish,
                "Publish a message: a copy to every subscription its type matches",
                body=schemas.Publish,
                result=R.Published,
            ),
            Operation(
                "DELETE",
                topic + "/subscriptions/{queue}",
                self.unsubscribe,
                "Unsubscribe a queue (the queue and its messages stay)",
                result=R.Unsubscribed,
            ),
            Operation(
                "DELETE",
                topic,
                self.delete_topic,
                "Delete a topic: every subscription (queues stay)",
                result=R.TopicDeleted,
            ),
        ]

    def _topic(self, request: Request) -> str:
        return L.validate_queue_name(request.path_params["topic"])

    def _queue(self, request: Request) -> Queue:
        return self.app.queue(L.validate_queue_name(request.path_params["name"]))

    # -- probes ----------------------------------------------------------------------------------

    async def healthz(self, request: Request) -> Response:
        try:
            async with asyncio.timeout(HEALTH_TIMEOUT_SECONDS):
                await self.app.list_queues()
        except TimeoutError:
            raise BackendUnavailable(
                f"the engine did not answer within {HEALTH_TIMEOUT_SECONDS:g}s"
            ) from None
        return ok({"status": "ok"})

    async def prometheus(self, request: Request) -> Response:
        return Response(await self.metrics.scrape(self.figures), media_type=CONTENT_TYPE)

    # -- queues ----------------------------------------------------------------------------------

    async def list_queues(self, request: Request) -> Response:
        return ok([queue_document(info, stats) for info, stats in await admin.every_queue(self.app)])

    async def create_queue(self, request: Request) -> Response:
        body = await self.bodies.parse(request, schemas.CreateQueue)
        await self.app.create_queue(
            body.name,
            delivery_delay=body.delivery_delay,
            retention_seconds=body.retention_seconds,
            dedup_window_seconds=body.dedup_window_seconds,
            max_backlog_messages=body.max_backlog_messages,
            max_backlog_bytes=body.max_backlog_bytes,
            partitions=body.partitions,
        )
        return ok(queue_document(*await admin.one_queue(self.app, body.name)), 201)

    async def get_queue(self, request: Request) -> Response:
        queue = self._queue(request)
        return ok(queue_document(*await admin.one_queue(self.app, queue.name)))

    async def update_queue(self, request: Request) -> Response:
        queue = self._queue(request)
        body = await self.bodies.parse(request, schemas.UpdateQueue)
        await self.app.update_queue(
            queue.name,
            delivery_delay=body.delivery_delay,
            retention_seconds=body.retention_seconds,
            dedup_window_seconds=body.dedup_window_seconds,
            max_backlog_messages=body.max_backlog_messages,
            max_backlog_bytes=body.max_backlog_bytes,
            partitions=body.partitions,
        )
        return ok(queue_document(*await admin.one_queue(self.app, queue.name)))

    async def delete_queue(self, request: Request) -> Response:
        queue = self._queue(request)
        deleted = await self.app.delete_queue(queue.name)
        self.figures.forget(queue.name)
        if not deleted:
            raise QueueNotFound(queue.name)
        return ok({"name": queue.name, "deleted": True})

    async def purge(self, request: Request) -> Response:
        queue = self._queue(request)
        purged = await queue.purge()
        self.figures.forget(queue.name)
        return ok({"name": queue.name, "purged": purged})

    async def delete_message(self, request: Request) -> Response:
        queue = self._queue(request)
        message_id = request.path_params["message_id"]
        if not await queue.delete(message_id):
            raise MessageNotFound(queue.name, message_id)
        self.figures.forget(queue.name)
        return ok({"queue": queue.name, "id": message_id, "deleted": True})

    async def pause(self, request: Request) -> Response:
        queue = self._queue(request)
        await queue.pause()
        return ok(queue_document(*await admin.one_queue(self.app, queue.name)))

    async def resume(self, request: Request) -> Response:
        queue = self._queue(request)
        await queue.resume()
        return ok(queue_document(*await admin.one_queue(self.app, queue.name)))

    async def list_workers(self, request: Request) -> Response:
        return ok([admin.worker_document(worker) for worker in await admin.recent_workers(self.app)])

    # -- the HTTP pull consumer ------------------------------------------------------------------

    async def get_pull_consumer(self, request: Request) -> Response:
        queue = self._queue(request)
        consumer = (await self.app.get_queue(queue.name)).settings.pull_consumer
        if consumer is None:
            raise ApiError(404, CONSUMER_NOT_FOUND, f"queue {queue.name!r} has no HTTP pull consumer")
        return ok(admin.pull_consumer_document(consumer))

    async def set_pull_consumer(self, request: Request) -> Response:
        queue = self._queue(request)
        body = await self.bodies.parse(request, schemas.HttpConsumer)
        info = await self.app.set_pull_consumer(queue.name, body.to_consumer())
        return ok(admin.pull_consumer_document(info.settings.pull_consumer))

    async def remove_pull_consumer(self, request: Request) -> Response:
        queue = self._queue(request)
        if (await self.app.get_queue(queue.name)).settings.pull_consumer is None:
            raise ApiError(404, CONSUMER_NOT_FOUND, f"queue {queue.name!r} has no HTTP pull consumer")
        await self.app.set_pull_consumer(queue.name, None)
        return ok({"name": queue.name, "deleted": True})

    # -- messages --------------------------------------------------------------------------------

    async def send(self, request: Request) -> Response:
        queue = self._queue(request)
        body = await self.bodies.parse(request, schemas.SendMessage)
        message = body.to_request()
        message_id = await queue.send(
            message.body,
            delay_seconds=message.delay_seconds,
            content_type=message.content_type,
            dedup_id=message.dedup_id,
            headers=message.headers,
            group=message.group,
        )
        self.metrics.count(queue.name, "send", 1)
        return ok({"id": message_id})

    async def send_batch(self, request: Request) -> Response:
        queue = self._queue(request)
        body = await self.bodies.parse(request, schemas.SendBatch)
        # every message is encoded and checked before any is written: a bad one sends none
        ids = await queue.send_batch(
            [message.to_request() for message in body.messages], delay_seconds=body.delay_seconds
        )
        self.metrics.count(queue.name, "send", len(ids))
        return ok({"ids": ids})

    async def pull(self, request: Request) -> Response:
        queue = self._queue(request)
        body = await self.bodies.parse(request, schemas.Pull, optional=True)
        pulled = await self.long_polls.pull(queue, body.batch_size, body.visibility_timeout(), body.wait_ms)
        figures = await self.figures.of(queue.name)  # read in the background: never a count here
        self.metrics.count(queue.name, "pull", len(pulled))
        return ok(
            {
                "message_backlog_count": figures.unacknowledged,
                "messages": [message_document(message) for message in pulled],
            }
        )

    async def ack(self, request: Request) -> Response:
        queue = self._queue(request)
        body = await self.bodies.parse(request, schemas.AckRequest)
        result = await queue.ack(
            [ack.lease_id for ack in body.acks],
            [(retry.lease_id, retry.delay_seconds) for retry in body.retries],
        )
        if result.warnings or not (body.acks or body.retries):
            # engines differ on settling in a missing queue; a stale lease is rare, so look then
            await self.app.get_queue(queue.name)
        self.metrics.count(queue.name, "ack", result.ack_count)
        self.metrics.count(queue.name, "retry", result.retry_count)
        return ok(
            {
                "ack_count": result.ack_count,
                "retry_count": result.retry_count,
                "dead_letter_count": result.dead_letter_count,
                "warnings": result.warnings,
            }
        )

    async def extend(self, request: Request) -> Response:
        queue = self._queue(request)
        body = await self.bodies.parse(request, schemas.ExtendRequest)
        by_timeout: dict[int, list[str]] = {}
        for lease in body.leases:
            by_timeout.setdefault(lease.visibility_timeout_ms, []).append(lease.lease_id)
        extended, warnings = 0, []
        for milliseconds, lease_ids in by_timeout.items():
            result = await queue.extend(lease_ids, milliseconds / 1000)
            extended += result.extended_count
            warnings += result.warnings
        if warnings:
            # engines differ on leases in a missing queue; a stale lease is rare, so look then
            await self.app.get_queue(queue.name)
        return ok({"extended_count": extended, "warnings": warnings})

    async def peek(self, request: Request) -> Response:
        queue = self._queue(request)
        text = request.query_params.get("limit", str(DEFAULT_PEEK_LIMIT))
        if not text.isdigit():
            raise ApiError(400, INVALID_INPUT, f"limit: must be a whole number, got {text[:40]!r}")
        await self.app.get_queue(queue.name)
        return ok([message_document(message) for message in await queue.peek(int(text))])

    async def replay(self, request: Request) -> Response:
        """Move the dead letters of this queue (a dead-letter queue) to `to`."""
        queue = self._queue(request)
        body = await self.bodies.parse(request, schemas.Replay)
        moved = await admin.replay(self.app, queue.name, body.to, body.limit)
        return ok({"from": queue.name, "to": body.to, "replayed": moved})

    # -- topics ----------------------------------------------------------------------------------

    async def list_topics(self, request: Request) -> Response:
        topics = await admin.every_topic(self.app)
        return ok([admin.topic_document(name, subscriptions) for name, subscriptions in topics.items()])

    async def create_topic(self, request: Request) -> Response:
        body = await self.bodies.parse(request, schemas.CreateTopic)
        wanted = [admin.SubscriptionRequest(s.queue, _types(s.types)) for s in body.subscriptions]
        subscriptions = await admin.create_topic(self.app, body.name, wanted)
        return ok(admin.topic_document(body.name, subscriptions), 201)

    async def get_topic(self, request: Request) -> Response:
        name = self._topic(request)
        return ok(admin.topic_document(name, await admin.one_topic(self.app, name)))

    async def delete_topic(self, request: Request) -> Response:
        name = self._topic(request)
        removed = await admin.delete_topic(self.app, name)
        return ok({"name": name, "deleted": True, "subscriptions": len(removed)})

    async def subscribe(self, request: Request) -> Response:
        name = self._topic(request)
        body = await self.bodies.parse(request, schemas.Subscribe)
        subscription = await admin.subscribe(self.app, name, body.queue, _types(body.types))
        return ok(admin.subscription_document(subscription))

    async def unsubscribe(self, request: Request) -> Response:
        name = self._topic(request)
        queue = L.validate_queue_name(request.path_params["queue"])
        await admin.unsubscribe(self.app, name, queue)
        return ok({"topic": name, "queue": queue, "unsubscribed": True})

    async def publish(self, request: Request) -> Response:
        name = self._topic(request)
        body = await self.bodies.parse(request, schemas.Publish)
        message = body.to_request()
        result = await self.app.topic(name).publish(
            message.body,
            delay_seconds=message.delay_seconds,
            content_type=message.content_type,
            headers=message.headers,
        )
        return ok(admin.publish_document(result))


def _types(types: list[str] | None) -> tuple[str, ...] | None:
    return None if types is None else tuple(types)
