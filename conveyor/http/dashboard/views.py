"""The dashboard's routes: what each page reads, and the actions (pause, resume, purge, replay,
delete one message).

Pages read the queues' figures from the background sampler (conveyor.admin.QueueHistory), never
counting a queue per view; a queue's page also peeks at its oldest messages (a bounded read).
Every action is a form POST under the API's auth and same-origin rules; purge and replay answer
first with a confirmation page, whose form posts again with `confirm=yes` (so does a message's
delete). After an action the
browser is sent (303) to the queue's page, so a reload does not act twice.

Not here yet, with a place left for each: replaying one message by id (the engines cannot yet),
message headers (pages.py `_message_details`), and workers seen recently.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Mapping
from urllib.parse import parse_qs, urlencode

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from conveyor import admin
from conveyor import limits as L
from conveyor.admin import QueueHistory, Reading
from conveyor.app import App
from conveyor.errors import ConveyorValueError, MessageLeased, QueueNotFound
from conveyor.http.body import read_body
from conveyor.http.dashboard import pages
from conveyor.http.dashboard.pages import BROWSE_DEFAULT, QueueView, Span
from conveyor.http.dashboard.style import PAGE_HEADERS
from conveyor.types import QueueInfo

# A form is a few short fields: anything bigger is refused before it is read.
FORM_LIMIT_BYTES = 4_096
# The most messages one page peeks at.
BROWSE_MAX = 100
# The queue list reloads itself this often, at least (it follows the sample interval).
MIN_REFRESH_SECONDS = 5
# What the page says after an action, by the `done` of its URL (built from checked values only).
DONE = {
    "paused": "Paused delivery of {queue}: sends are still accepted.",
    "resumed": "Resumed delivery of {queue}.",
    "purged": "Purged {count} message(s) from {queue}.",
    "replayed": "Replayed {count} message(s) from {queue} to {to}.",
    "deleted": "Deleted one message from {queue}.",
    "gone": "That message was no longer in {queue} (acked, expired or deleted meanwhile).",
}

Handler = Callable[[Request], Awaitable[Response]]


class FormError(ConveyorValueError):
    """A dashboard form with a missing or bad field."""


class Dashboard:
    def __init__(
        self,
        app: App,
        declared_dead_letter_queues: Mapping[str, str],
        body_timeout_seconds: float,
        history: QueueHistory,
        *,
        sample_on_view: bool = False,
    ) -> None:
        """`sample_on_view`: read every queue at each view (when nothing samples in the background)."""
        self.app = app
        self.sample_on_view = sample_on_view
        self.body_timeout = body_timeout_seconds
        self.declared = dict(declared_dead_letter_queues)
        self.history = history

    def routes(self) -> list[BaseRoute]:
        queue = "/dashboard/queues/{name}"
        return [
            Route("/", self._page(self.overview), methods=["GET"]),
            Route("/dashboard/topics", self._page(self.topics), methods=["GET"]),
            Route(queue, self._page(self.queue), methods=["GET"]),
            Route(f"{queue}/pause", self._page(self.pause), methods=["POST"]),
            Route(f"{queue}/resume", self._page(self.resume), methods=["POST"]),
            Route(f"{queue}/purge", self._page(self.purge), methods=["POST"]),
            Route(f"{queue}/replay", self._page(self.replay), methods=["POST"]),
            Route(f"{queue}/messages/{{message_id}}/delete", self._page(self.delete), methods=["POST"]),
        ]

    # -- reading -----------------------------------------------------------------------------

    def _span(self) -> Span:
        """The last hour, or less while the server has been up for less: since its first sample."""
        end = self.app.clock.now()
        start = end - self.history.keep_seconds
        readings = self.history.readings()
        if readings and readings[0].at > start:
            start = min(readings[0].at, end - self.history.interval_seconds)
        return Span(start, end, self.history.interval_seconds)

    def _views(self, reading: Reading, infos: Mapping[str, QueueInfo]) -> dict[str, QueueView]:
        names = sorted(reading.stats)
        dlqs = admin.dead_letter_queues(names, admin.declared_dead_letter_queues(self.app, self.declared))
        holders: dict[str, list[str]] = {}
        for queue, dlq in sorted(dlqs.items()):
            holders.setdefault(dlq, []).append(queue)
        return {name: self._view(infos[name], reading, dlqs, holders) for name in names}

    def _view(
        self,
        info: QueueInfo,
        reading: Reading,
        dlqs: Mapping[str, str],
        holders: Mapping[str, list[str]],
    ) -> QueueView:
        name = info.name
        dlq = dlqs.get(name)
        dead = reading.stats.get(dlq) if dlq is not None else None
        return QueueView(
            info=info,
            stats=reading.stats[name],
            points=self.history.points(name, dlq),
            dead_letter_queue=dlq,
            dead_letters=None if dead is None else dead.total,
            dead_letters_of=holders.get(name, []),
        )

    async def _reading(self) -> tuple[Reading, dict[str, QueueInfo]]:
        """The last sample, and every queue's settings (a cheap listing, not a count)."""
        reading = await (self.history.sample() if self.sample_on_view else self.history.latest())
        infos = {info.name: info for info in await self.app.list_queues()}
        # a queue deleted since the sample is left out; one created since shows at the next
        stats = {name: s for name, s in reading.stats.items() if name in infos}
        return Reading(reading.at, stats), infos

    async def overview(self, request: Request) -> Response:
        reading, infos = await self._reading()
        views = self._views(reading, infos)
        subscriptions = await self.app.list_subscriptions()
        workers = await admin.recent_workers(self.app)
        refresh = max(MIN_REFRESH_SECONDS, math.ceil(self.history.interval_seconds))
        page = pages.overview_page(
            list(views.values()),
            subscriptions,
            self._span(),
            workers,
            engine=self.app.url,
            notice=_notice(request),
            refresh_seconds=refresh,
        )
        return HTMLResponse(page, headers=PAGE_HEADERS)

    async def topics(self, request: Request) -> Response:
        reading, _ = await self._reading()
        subscriptions = await self.app.list_subscriptions()
        page = pages.topics_page(subscriptions, reading.stats, engine=self.app.url)
        return HTMLResponse(page, headers=PAGE_HEADERS)

    async def queue(self, request: Request) -> Response:
        name = _queue_name(request)
        limit = _browse_limit(request)
        info = await self.app.get_queue(name)  # QueueNotFound: a 404 page
        reading, infos = await self._reading()
        if name not in reading.stats:  # created since the last sample: read this one queue
            reading.stats[name] = await self.app.queue(name).stats()
        infos[name] = info
        view = self._views(reading, infos)[name]
        messages = await self.app.queue(name).peek(limit)
        sources = [m.dead_letter.source_queue for m in messages if m.dead_letter is not None]
        targets = [
            q for q in dict.fromkeys([*view.dead_letters_of, *sources]) if q in reading.stats and q != name
        ]
        page = pages.queue_page(
            view,
            messages,
            limit,
            self._span(),
            targets,
            await self.app.list_subscriptions(),
            engine=self.app.url,
            notice=_notice(request, name),
        )
        return HTMLResponse(page, headers=PAGE_HEADERS)

    # -- actions -----------------------------------------------------------------------------

    async def pause(self, request: Request) -> Response:
        name = _queue_name(request)
        await self.app.get_queue(name)
        await self.app.queue(name).pause()
        return await self._done(name, "paused")

    async def resume(self, request: Request) -> Response:
        name = _queue_name(request)
        await self.app.get_queue(name)
        await self.app.queue(name).resume()
        return await self._done(name, "resumed")

    async def purge(self, request: Request) -> Response:
        name = _queue_name(request)
        form = await self._form(request)
        await self.app.get_queue(name)
        if form.get("confirm") != "yes":
            stats = (await self.history.latest()).stats.get(name)
            held = "every message" if stats is None else f"all {stats.total:,} messages"
            page = pages.confirm_page(
                f"Purge {name}?",
                f"This deletes {held} of {name}: ready, delayed and leased. It cannot be undone.",
                request.url.path,
                {},
                f"Purge {name}",
                pages.queue_url(name),
                engine=self.app.url,
            )
            return HTMLResponse(page, headers=PAGE_HEADERS)
        purged = await self.app.queue(name).purge()
        return await self._done(name, "purged", count=purged)

    async def replay(self, request: Request) -> Response:
        name = _queue_name(request)
        form = await self._form(request)
        to = form.get("to", "")
        if not L.QUEUE_NAME_PATTERN.fullmatch(to):
            raise FormError(f"the queue to replay to must be a queue name, got {to!r}")
        limit = _replay_limit(form.get("limit", ""))
        if to == name:
            raise FormError(f"cannot replay queue {name!r} into itself")
        await self.app.get_queue(to)  # a typo is a 404 page, not a new queue
        movable = await admin.movable(self.app, name, limit)
        if form.get("confirm") != "yes":
            how_many = f"the oldest {limit:,}" if limit is not None else "all"
            page = pages.confirm_page(
                f"Replay dead letters of {name}?",
                f"This moves {how_many} of the messages ready in {name} ({movable:,} now) to {to}, "
                "where they start again at attempt 1.",
                request.url.path,
                {"to": to, "limit": "" if limit is None else str(limit)},
                f"Replay {movable:,} to {to}",
                pages.queue_url(name),
                engine=self.app.url,
            )
            return HTMLResponse(page, headers=PAGE_HEADERS)
        moved = await admin.replay(self.app, name, to, limit)
        return await self._done(name, "replayed", count=moved, to=to)

    async def delete(self, request: Request) -> Response:
        name = _queue_name(request)
        message_id = request.path_params["message_id"]
        if not L.MESSAGE_ID_PATTERN.fullmatch(message_id):
            raise FormError(f"{message_id!r} is not a message id")
        form = await self._form(request)
        await self.app.get_queue(name)
        if form.get("confirm") != "yes":
            page = pages.confirm_page(
                f"Delete message {message_id}?",
                f"This deletes message {message_id} from {name}: it will never be delivered. "
                "It cannot be undone.",
                request.url.path,
                {},
                "Delete the message",
                pages.queue_url(name),
                engine=self.app.url,
            )
            return HTMLResponse(page, headers=PAGE_HEADERS)
        try:
            deleted = await self.app.queue(name).delete(message_id)
        except MessageLeased as exc:
            return self._problem(409, "Nothing was done", str(exc))
        return await self._done(name, "deleted" if deleted else "gone")

    async def _form(self, request: Request) -> dict[str, str]:
        raw = await read_body(request, FORM_LIMIT_BYTES, self.body_timeout)
        return {key: values[0] for key, values in parse_qs(raw.decode(errors="replace")).items()}

    async def _done(
        self, name: str, done: str, *, count: int | None = None, to: str | None = None
    ) -> Response:
        await self.history.sample()  # the page after an action shows its effect
        query = (
            {"done": done}
            | ({} if count is None else {"count": str(count)})
            | ({} if to is None else {"to": to})
        )
        # 303: the browser shows the page with GET, so a reload does not act again
        return RedirectResponse(f"{pages.queue_url(name)}?{urlencode(query)}", status_code=303)

    # -- errors as pages ---------------------------------------------------------------------

    def _page(self, handler: Handler) -> Handler:
        """`handler`, with a missing queue or a bad value answered as a page, not as JSON."""

        async def page(request: Request) -> Response:
            try:
                return await handler(request)
            except QueueNotFound as exc:
                return self._problem(404, "No such queue", str(exc))
            except ConveyorValueError as exc:
                return self._problem(400, "Nothing was done", str(exc))

        return page

    def _problem(self, status: int, title: str, detail: str) -> Response:
        page = pages.problem_page(title, detail, engine=self.app.url)
        return HTMLResponse(page, status_code=status, headers=PAGE_HEADERS)


def _queue_name(request: Request) -> str:
    return L.validate_queue_name(request.path_params["name"])


def _browse_limit(request: Request) -> int:
    raw = request.query_params.get("limit")
    if raw is None:
        return BROWSE_DEFAULT
    if not raw.isdigit() or not 1 <= int(raw) <= BROWSE_MAX:
        raise FormError(f"limit must be a whole number from 1 to {BROWSE_MAX}, got {raw!r}")
    return int(raw)


def _replay_limit(raw: str) -> int | None:
    """How many to replay: empty means all."""
    raw = raw.strip()
    if not raw:
        return None
    if not raw.isdigit() or not 1 <= int(raw) <= L.MAX_REPLAY_LIMIT:
        raise FormError(
            f"how many to replay must be a whole number from 1 to {L.MAX_REPLAY_LIMIT:,}, got {raw!r}"
        )
    return int(raw)


def _notice(request: Request, queue: str | None = None) -> str | None:
    """The line shown after an action; built here from checked values, never echoed from the URL."""
    params = request.query_params
    template = DONE.get(params.get("done", ""))
    count, to = params.get("count", "0"), params.get("to", "")
    if template is None or queue is None or not count.isdigit():
        return None
    if "{to}" in template and not L.QUEUE_NAME_PATTERN.fullmatch(to):
        return None
    return template.format(queue=queue, count=f"{int(count):,}", to=to)
