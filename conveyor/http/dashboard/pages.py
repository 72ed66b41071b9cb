"""The dashboard's HTML: the queue list, a queue's page, the confirmation step and error pages.

Everything here is a pure function of what the handlers read (views.py): no I/O, so a page is
easy to test and to change. Every value that came from a queue (names, bodies, errors) is escaped.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from html import escape
from typing import Any
from urllib.parse import quote

from conveyor.admin import Point
from conveyor.http.dashboard.charts import Series, clock, line_chart, number, sparkline
from conveyor.http.dashboard.style import STYLESHEET
from conveyor.limits import WORKER_HEARTBEAT_SECONDS, WORKERS_SEEN_SECONDS
from conveyor.producer import PeekedMessage
from conveyor.types import QueueInfo, QueueSettings, QueueStats, Subscription, WorkerInfo

# A body is previewed in this many characters; its full text (up to BODY_SHOWN_CHARS) is one
# click away.
BODY_PREVIEW_CHARS = 140
BODY_SHOWN_CHARS = 8_000
# How many messages the browser shows: the choices offered, and the default.
BROWSE_CHOICES = (10, 20, 50, 100)
BROWSE_DEFAULT = 20
EVERY_TYPE = '<span class="muted">every type</span>'

RATE_NOTE = (
    "in/s and out/s: the growth and the shrinking per second of the queue's total (ready + delayed + "
    "in flight) between the server's last two samples: lower bounds of the send rate and of the rate "
    "at which messages were acked, dead-lettered or purged (a queue drained as fast as it fills shows "
    "0 for both)."
)


@dataclass(frozen=True, slots=True)
class QueueView:
    """One queue as the pages show it."""

    info: QueueInfo
    stats: QueueStats
    points: Sequence[Point]
    #: the queue holding this queue's dead letters, and how many it holds
    dead_letter_queue: str | None = None
    dead_letters: int | None = None
    #: the queues whose dead letters this queue holds
    dead_letters_of: Sequence[str] = ()

    @property
    def name(self) -> str:
        return self.info.name

    @property
    def url(self) -> str:
        return queue_url(self.info.name)


@dataclass(frozen=True, slots=True)
class Span:
    """The time the charts cover, and how often the server samples."""

    start: float
    end: float
    interval_seconds: float


def queue_url(name: str) -> str:
    return f"/dashboard/queues/{quote(name)}"


def age(seconds: float) -> str:
    """12s, 5m, 2.5h, 4.0d."""
    if seconds < 60:
        return f"{seconds:.0f}s"
    if seconds < 3_600:
        return f"{seconds / 60:.0f}m"
    if seconds < 86_400:
        return f"{seconds / 3_600:.1f}h"
    return f"{seconds / 86_400:.1f}d"


def size(count: int) -> str:
    for unit, scale in (("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if count >= scale:
            return f"{count / scale:.1f} {unit}"
    return f"{count:,} B"


def rate(value: float | None) -> str:
    return "-" if value is None else number(round(value, 2))


def when(timestamp: float) -> str:
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


# -- the frame ---------------------------------------------------------------------------------


def layout(title: str, body: str, *, engine: str, refresh_seconds: int | None = None) -> str:
    refresh = f'<meta http-equiv="refresh" content="{refresh_seconds}">' if refresh_seconds else ""
    now = dt.datetime.now(dt.UTC).strftime("%H:%M:%S UTC")
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
{refresh}
<title>{escape(title)} · conveyor</title>
<style>{STYLESHEET}</style>
</head>
<body>
<header class="top"><a class="brand" href="/">conveyor</a>
<nav><a href="/">Queues</a><a href="/dashboard/topics">Topics</a><a href="/#workers">Workers</a></nav>
<span class="meta">{escape(engine)} · {now}</span></header>
<main>
{body}
</main>
</body>
</html>
"""


def _tile(label: str, value: str, state: str = "", *, name: str = "") -> str:
    data = f' data-tile="{escape(name)}"' if name else ""
    return (
        f'<div class="tile {state}"{data}><div class="label">{escape(label)}</div>'
        f'<div class="value">{escape(value)}</div></div>'
    )


def _notice(notice: str | None) -> str:
    return f'<p class="notice" role="status">{escape(notice)}</p>' if notice else ""


def _legend(names: Sequence[str]) -> str:
    return (
        '<div class="legend">'
        + "".join(f'<span class="s{i}"><i></i>{escape(name)}</span>' for i, name in enumerate(names))
        + "</div>"
    )


# -- the queue list ------------------------------------------------------------------------------


def _queue_row(queue: QueueView, span: Span) -> str:
    s = queue.stats
    last = queue.points[-1] if queue.points else None

    def spark(series: Series, label: str) -> str:
        return sparkline(series, start=span.start, end=span.end, label=label)

    backlog = Series("backlog", [(p.at, p.backlog) for p in queue.points])
    out = Series("out/s", [(p.at, p.net_out) for p in queue.points])
    badge = ' <span class="badge paused">paused</span>' if s.paused else ""
    role = ""
    if queue.dead_letters_of:
        role = f'<span class="sub">dead letters of {escape(", ".join(queue.dead_letters_of))}</span>'
    if queue.dead_letter_queue is None:
        dead = '<span class="muted">-</span>'
    else:
        count = queue.dead_letters or 0
        dead = (
            f'<span><a href="{queue_url(queue.dead_letter_queue)}" class="{"dead" if count else "muted"}">'
            f'{count:,}</a> <span class="muted">in {escape(queue.dead_letter_queue)}</span></span>'
        )
    cells = [
        f'<td class="name"><a href="{queue.url}">{escape(queue.name)}</a>{badge}{role}</td>',
        f'<td data-label="backlog" data-value="{s.backlog}">{s.backlog:,}</td>',
        f'<td data-label="backlog, last hour">{spark(backlog, "backlog")}</td>',
        f'<td data-label="in flight" data-value="{s.in_flight}">{s.in_flight:,}</td>',
        f'<td data-label="delayed" data-value="{s.delayed}">{s.delayed:,}</td>',
        f'<td data-label="oldest">{age(s.oldest_age_seconds) if s.total else "-"}</td>',
        f'<td data-label="in/s">{rate(last.net_in if last else None)}</td>',
        f'<td data-label="out/s">{rate(last.net_out if last else None)}</td>',
        f'<td data-label="out/s, last hour">{spark(out, "out/s")}</td>',
        f'<td class="text full" data-label="dead letters">{dead}</td>',
    ]
    return f'<tr data-queue="{escape(queue.name)}">' + "".join(cells) + "</tr>"


def _topics(subscriptions: Sequence[Subscription]) -> str:
    if not subscriptions:
        example = '<code>app.subscribe("orders", queue="kitchen")</code>'
        body = f'<p class="muted">No topics yet: {example} makes one.</p>'
    else:
        rows = "".join(
            f'<tr data-topic="{escape(sub.topic)}"><td class="name">{escape(sub.topic)}</td>'
            f'<td class="text" data-label="queue"><a href="{queue_url(sub.queue)}">'
            f"{escape(sub.queue)}</a></td>"
            f'<td class="text" data-label="types">'
            f"{escape(', '.join(sub.types)) if sub.types else EVERY_TYPE}</td>"
            f'<td class="full" data-label="since">{when(sub.created_at)}</td></tr>'
            for sub in sorted(subscriptions, key=lambda sub: (sub.topic, sub.queue))
        )
        body = (
            '<table class="stack"><thead><tr><th class="text">topic</th>'
            '<th class="text">subscription queue</th>'
            '<th class="text">types</th><th>since (UTC)</th></tr></thead>'
            f"<tbody>{rows}</tbody></table>"
        )
    return f'<section class="card" id="topics"><h2>Topics</h2>{body}</section>'


def topics_page(
    subscriptions: Sequence[Subscription], stats: Mapping[str, QueueStats], *, engine: str
) -> str:
    """Every topic with its subscriptions: each queue, the message types it takes, and what it holds."""
    by_topic: dict[str, list[Subscription]] = {}
    for sub in sorted(subscriptions, key=lambda sub: (sub.topic, sub.queue)):
        by_topic.setdefault(sub.topic, []).append(sub)

    def held(queue: str, what: str) -> str:
        figures = stats.get(queue)
        if figures is None:
            return "-"
        value = figures.backlog if what == "backlog" else figures.in_flight
        return f'<span data-value="{value}">{value:,}</span>'

    def types(sub: Subscription) -> str:
        return escape(", ".join(sub.types)) if sub.types else EVERY_TYPE

    cards = []
    for topic, subs in by_topic.items():
        rows = "".join(
            f'<tr data-subscription="{escape(sub.queue)}"><td class="name">'
            f'<a href="{queue_url(sub.queue)}">{escape(sub.queue)}</a></td>'
            f'<td class="text" data-label="types">{types(sub)}</td>'
            f'<td data-label="backlog">{held(sub.queue, "backlog")}</td>'
            f'<td data-label="in flight">{held(sub.queue, "in_flight")}</td>'
            f'<td class="full" data-label="since">{when(sub.created_at)}</td></tr>'
            for sub in subs
        )
        cards.append(
            f'<section class="card" data-topic="{escape(topic)}"><h2>{escape(topic)} '
            f'<span class="muted">{len(subs)} subscription{"s" if len(subs) != 1 else ""}</span></h2>'
            '<table class="stack"><thead><tr><th class="text">subscription queue</th>'
            '<th class="text">types</th><th>backlog</th><th>in flight</th><th>since (UTC)</th></tr></thead>'
            f"<tbody>{rows}</tbody></table></section>"
        )
    if not cards:
        example = '<code>app.subscribe("orders", queue="kitchen")</code>'
        cards.append(
            f'<section class="card"><p class="muted">No topics yet: {example} makes one.</p></section>'
        )
    note = (
        '<p class="note">A message published to a topic is copied into every subscription queue whose '
        "types include its type (every type when none are named). Backlogs are the last sample's.</p>"
    )
    return layout("Topics", f"<h1>Topics</h1>{''.join(cards)}{note}", engine=engine)


def _workers(workers: Sequence[WorkerInfo], now: float) -> str:
    seen = f"{WORKERS_SEEN_SECONDS:g} s"
    if not workers:
        start = "<code>conveyor worker</code>"
        body = f'<p class="muted">No worker seen in the last {seen}: {start} starts one.</p>'
    else:
        rows = "".join(
            f'<tr data-worker="{escape(worker.id)}"><td class="name">{escape(worker.host)}</td>'
            f'<td data-label="pid" data-value="{worker.pid}">{worker.pid}</td>'
            f'<td class="text" data-label="queues">'
            + ", ".join(f'<a href="{queue_url(name)}">{escape(name)}</a>' for name in worker.queues)
            + "</td>"
            f'<td data-label="concurrency" data-value="{worker.concurrency}">{worker.concurrency}</td>'
            f'<td data-label="last heartbeat">{age(max(0.0, now - worker.seen_at))} ago</td>'
            f'<td class="full" data-label="up">{age(max(0.0, now - worker.started_at))}</td></tr>'
            for worker in workers
        )
        body = (
            '<table class="stack"><thead><tr><th class="text">host</th><th>pid</th>'
            '<th class="text">queues</th><th>concurrency</th><th>last heartbeat</th><th>up</th></tr></thead>'
            f"<tbody>{rows}</tbody></table>"
            f'<p class="note">Each worker writes a heartbeat every {WORKER_HEARTBEAT_SECONDS:g} s; '
            f"those seen in the last {seen} are listed.</p>"
        )
    return f'<section class="card" id="workers"><h2>Workers</h2>{body}</section>'


def overview_page(
    queues: Sequence[QueueView],
    subscriptions: Sequence[Subscription],
    span: Span,
    workers: Sequence[WorkerInfo] = (),
    *,
    engine: str,
    notice: str | None,
    refresh_seconds: int,
) -> str:
    dead = sum(q.stats.total for q in queues if q.dead_letters_of)
    tiles = "".join(
        [
            _tile("Queues", f"{len(queues):,}", name="queues"),
            _tile("Ready", f"{sum(q.stats.backlog for q in queues):,}", name="backlog"),
            _tile("In flight", f"{sum(q.stats.in_flight for q in queues):,}", name="in_flight"),
            _tile("Delayed", f"{sum(q.stats.delayed for q in queues):,}", name="delayed"),
            _tile("Dead letters", f"{dead:,}", "bad" if dead else "ok", name="dead_letters"),
            _tile("Paused", f"{sum(q.stats.paused for q in queues):,}", name="paused"),
        ]
    )
    rows = "\n".join(_queue_row(queue, span) for queue in queues)
    if not queues:
        rows = '<tr><td class="text muted" colspan="10">No queues yet.</td></tr>'
    table = f"""<section class="card"><h2>Queues</h2>
<table class="stack queues">
<thead><tr><th class="text">queue</th><th>backlog</th><th class="text">last hour</th><th>in flight</th>
<th>delayed</th><th>oldest</th><th>in/s</th><th>out/s</th><th class="text">out/s, last hour</th>
<th class="text">dead letters</th></tr></thead>
<tbody>
{rows}
</tbody>
</table>
<p class="note">Sampled by the server every {span.interval_seconds:g} s; the lines span the last
{age(span.end - span.start)} ({clock(span.start)} to {clock(span.end)} UTC). {escape(RATE_NOTE)}
A queue's dead letters are in its consumer's dead_letter_queue, else in a queue named
&lt;queue&gt;-dlq.</p>
</section>"""
    body = (
        f'<h1>Queues</h1>{_notice(notice)}<div class="tiles">{tiles}</div>{table}{_topics(subscriptions)}'
        f"{_workers(workers, time.time())}"
    )
    return layout("Queues", body, engine=engine, refresh_seconds=refresh_seconds)


# -- one queue -----------------------------------------------------------------------------------


def _preview(message: PeekedMessage) -> tuple[str, str]:
    """(one-line preview, full text) of a body."""
    body: Any = message.body
    if isinstance(body, bytes):
        full = f"<{len(body):,} bytes> " + body[:BODY_SHOWN_CHARS].hex(" ")
    elif isinstance(body, str) and message.content_type == "text":
        full = body
    else:
        full = json.dumps(body, ensure_ascii=False, indent=2)
    flat = " ".join(full.split())
    preview = flat if len(flat) <= BODY_PREVIEW_CHARS else flat[: BODY_PREVIEW_CHARS - 1] + "…"
    if len(full) > BODY_SHOWN_CHARS:
        full = full[:BODY_SHOWN_CHARS] + f"\n… ({len(full) - BODY_SHOWN_CHARS:,} more characters)"
    return preview, full


def _message_details(message: PeekedMessage, full: str) -> str:
    """What a click on a message shows: its body, then its headers (when it has any)."""
    count = len(message.headers)
    summary = f"body ({escape(message.content_type)})" + (
        f" · {count} header{'s' * (count != 1)}" if count else ""
    )
    headers = "".join(
        f"<dt><code>{escape(key)}</code></dt><dd><code>{escape(value)}</code></dd>"
        for key, value in sorted(message.headers.items())
    )
    listed = f'<dl class="headers">{headers}</dl>' if headers else ""
    return f"<details><summary>{summary}</summary><pre>{escape(full)}</pre>{listed}</details>"


def _delete_form(queue: str, message: PeekedMessage) -> str:
    """A message's delete button: it asks for confirmation first; a leased one has none (the engine
    would refuse it: its consumer decides)."""
    if message.leased:
        return ""
    action = f"{queue_url(queue)}/messages/{escape(message.id)}/delete"
    return (
        f'<form method="post" action="{action}"><button class="danger" type="submit">Delete…</button></form>'
    )


def _messages_table(queue: str, messages: Sequence[PeekedMessage]) -> str:
    rows = []
    for message in messages:
        preview, full = _preview(message)
        state = '<span class="badge paused">leased</span>' if message.leased else "ready"
        rows.append(
            f'<tr data-message="{escape(message.id)}">'
            f'<td class="name"><code>{escape(message.id)}</code></td>'
            f'<td class="full" data-label="sent (UTC)">{when(message.timestamp.timestamp())}</td>'
            f'<td data-label="attempts">{message.attempts}</td>'
            f'<td data-label="state">{state}</td>'
            f'<td class="text wide"><code class="preview">{escape(preview)}</code>'
            f"{_message_details(message, full)}</td>"
            f'<td data-label="">{_delete_form(queue, message)}</td></tr>'
        )
    return (
        '<table class="stack messages"><thead><tr><th class="text">id</th><th>sent (UTC)</th>'
        "<th>attempts</th>"
        '<th>state</th><th class="text">body</th><th></th></tr></thead><tbody>'
        + "".join(rows)
        + "</tbody></table>"
    )


def _dead_letters_table(queue: str, messages: Sequence[PeekedMessage]) -> str:
    rows = []
    for message in messages:
        preview, full = _preview(message)
        dead = message.dead_letter
        if dead is None:  # sent to this queue directly, not by a consumer giving up
            origin = '<span class="muted">sent here</span>'
            error, attempts, at = (
                '<span class="muted">-</span>',
                message.attempts,
                message.timestamp.timestamp(),
            )
        else:
            origin = f'<a href="{queue_url(dead.source_queue)}">{escape(dead.source_queue)}</a>'
            error = f'<span class="error-text">{escape(dead.error)}</span>'
            attempts, at = dead.attempts, dead.dead_lettered_at
        original = (
            "" if dead is None else f'<span class="sub">was <code>{escape(dead.original_id)}</code></span>'
        )
        rows.append(
            f'<tr data-message="{escape(message.id)}">'
            f'<td class="name top"><code>{escape(message.id)}</code>{original}</td>'
            f'<td class="top full" data-label="dead-lettered (UTC)">{when(at)}</td>'
            f'<td class="top" data-label="from">{origin}</td>'
            f'<td class="top" data-label="attempts" data-value="{attempts}">{attempts}</td>'
            f'<td class="text wide top"><div class="sub">last error</div>{error}</td>'
            f'<td class="text wide top"><code class="preview">{escape(preview)}</code>'
            f"{_message_details(message, full)}</td>"
            f'<td class="top" data-label="">{_delete_form(queue, message)}</td></tr>'
        )
    return (
        '<table class="stack messages dead-letters"><thead><tr><th class="text">id</th>'
        '<th>dead-lettered (UTC)</th><th>from</th><th>attempts</th><th class="text">last error</th>'
        '<th class="text">body</th><th></th></tr></thead>'
        "<tbody>" + "".join(rows) + "</tbody></table>"
    )


def _browse_choices(queue: QueueView, limit: int) -> str:
    return (
        '<span class="choices">show '
        + "".join(
            f'<a href="{queue.url}?limit={n}"{" class=current" if n == limit else ""}>{n}</a>'
            for n in BROWSE_CHOICES
        )
        + "</span>"
    )


def _actions(queue: QueueView, replay_targets: Sequence[str]) -> str:
    url = queue.url
    pause = (
        f'<form method="post" action="{url}/resume"><button type="submit">Resume delivery</button></form>'
        if queue.stats.paused
        else f'<form method="post" action="{url}/pause"><button type="submit">Pause delivery</button></form>'
    )
    purge = (
        f'<form method="post" action="{url}/purge">'
        '<button class="danger" type="submit">Purge…</button></form>'
    )
    parts = [pause, purge]
    movable = queue.stats.backlog + queue.stats.delayed
    if replay_targets and movable:
        options = "".join(f"<option>{escape(name)}</option>" for name in replay_targets)
        parts.append(
            f'<form method="post" action="{url}/replay"><input type="hidden" name="limit" value="1">'
            f'<input type="hidden" name="to" value="{escape(replay_targets[0])}">'
            f'<button type="submit">Replay the oldest to {escape(replay_targets[0])}…</button></form>'
        )
        parts.append(
            f'<form method="post" action="{url}/replay"><label>Replay <input type="number" name="limit" '
            f'min="1" placeholder="all {movable:,}" aria-label="how many (oldest first; empty: all)"></label>'
            f'<label>to <select name="to">{options}</select></label>'
            '<button type="submit">Replay…</button></form>'
        )
    return '<section class="card actions">' + "".join(parts) + "</section>"


def queue_page(
    queue: QueueView,
    messages: Sequence[PeekedMessage],
    limit: int,
    span: Span,
    replay_targets: Sequence[str],
    subscriptions: Sequence[Subscription],
    *,
    engine: str,
    notice: str | None,
) -> str:
    s, points = queue.stats, queue.points
    badge = (
        '<span class="badge paused">paused</span>'
        if s.paused
        else '<span class="badge delivering">delivering</span>'
    )
    tiles = [
        _tile("Backlog", f"{s.backlog:,}", name="backlog"),
        _tile("In flight", f"{s.in_flight:,}", name="in_flight"),
        _tile("Delayed", f"{s.delayed:,}", name="delayed"),
        _tile("Oldest", age(s.oldest_age_seconds) if s.total else "-", name="oldest"),
        _tile("Stored", size(s.bytes), name="bytes"),
    ]
    if queue.dead_letter_queue is not None:
        count = queue.dead_letters or 0
        tiles.append(_tile("Dead letters", f"{count:,}", "bad" if count else "ok", name="dead_letters"))
    held = [
        Series("backlog", [(p.at, p.backlog) for p in points]),
        Series("in flight", [(p.at, p.in_flight) for p in points]),
        Series("delayed", [(p.at, p.delayed) for p in points]),
    ]
    flow = [
        Series("in/s", [(p.at, p.net_in) for p in points]),
        Series("out/s", [(p.at, p.net_out) for p in points]),
    ]
    charts = [
        _chart_card(
            "Messages held",
            held,
            span,
            "Ready, in flight (leased to a consumer) and delayed (not visible yet: delayed sends and "
            "retries), at each sample.",
        ),
        _chart_card("In and out per second", flow, span, RATE_NOTE),
    ]
    if queue.dead_letter_queue is not None:
        dead = [Series("dead-lettered/s", [(p.at, p.dead_lettered) for p in points])]
        charts.append(
            _chart_card(
                "Dead-lettered per second",
                dead,
                span,
                f"The growth per second of {queue.dead_letter_queue} between samples: a lower bound "
                "(a replay out of it hides what came in meanwhile). Retries are not visible in queue "
                "counts: a retried message stays in its queue.",
            )
        )
    oldest = [Series("oldest", [(p.at, p.oldest_age_seconds) for p in points])]
    charts.append(
        _chart_card(
            "Oldest message age", oldest, span, "Seconds since the oldest message was sent.", unit="s"
        )
    )
    is_dead_letter_queue = bool(queue.dead_letters_of) or any(m.dead_letter for m in messages)
    browser = (
        _dead_letters_table(queue.name, messages)
        if is_dead_letter_queue
        else _messages_table(queue.name, messages)
    )
    if not messages:
        browser = '<p class="muted">No messages.</p>'
    title = "Dead letters" if is_dead_letter_queue else "Messages"
    links = []
    if queue.dead_letter_queue is not None:
        links.append(
            f'dead letters go to <a href="{queue_url(queue.dead_letter_queue)}">'
            f"{escape(queue.dead_letter_queue)}</a> ({queue.dead_letters or 0:,})"
        )
    if queue.dead_letters_of:
        links.append(
            "holds the dead letters of "
            + ", ".join(f'<a href="{queue_url(name)}">{escape(name)}</a>' for name in queue.dead_letters_of)
        )
    topics = sorted({sub.topic for sub in subscriptions if sub.queue == queue.name})
    if topics:
        links.append("subscribed to the topics " + escape(", ".join(topics)))
    settings = queue.info.settings
    links.append(
        f"retention {age(settings.retention_seconds)}, delivery delay {settings.delivery_delay:g}s, "
        f"{_backlog_limit(settings)}, created {when(queue.info.created_at)} UTC"
    )
    body = f"""<p><a href="/">← all queues</a></p>
<h1 data-queue="{escape(queue.name)}">{escape(queue.name)} {badge}</h1>
{_notice(notice)}
<p class="muted">{" · ".join(links)}</p>
{_actions(queue, replay_targets)}
<div class="tiles">{"".join(tiles)}</div>
<div class="charts">{"".join(charts)}</div>
<section class="card"><h2>{title} <small class="muted">oldest first, up to {limit}</small></h2>
<p>{_browse_choices(queue, limit)}</p>
{browser}
<p class="note">Peeked without leasing: looking changes nothing. Times in UTC.</p>
</section>"""
    return layout(queue.name, body, engine=engine)


def _chart_card(title: str, series: Sequence[Series], span: Span, note: str, *, unit: str = "") -> str:
    legend = _legend([line.name for line in series]) if len(series) > 1 else ""
    chart = line_chart(title, series, start=span.start, end=span.end, unit=unit)
    return (
        f'<div class="card"><h2>{escape(title)}</h2>{legend}{chart}<p class="note">{escape(note)}</p></div>'
    )


# -- confirmation and problems -------------------------------------------------------------------


def confirm_page(
    title: str,
    explanation: str,
    action: str,
    fields: dict[str, str],
    button: str,
    back: str,
    *,
    engine: str,
) -> str:
    """The step between a destructive button and its effect: the same form again, confirmed."""
    hidden = "".join(
        f'<input type="hidden" name="{escape(name)}" value="{escape(value)}">'
        for name, value in fields.items()
    )
    body = f"""<h1>{escape(title)}</h1>
<section class="card"><p>{escape(explanation)}</p>
<div class="actions"><form method="post" action="{escape(action)}">{hidden}
<input type="hidden" name="confirm" value="yes">
<button class="danger" type="submit">{escape(button)}</button></form>
<a href="{escape(back)}">Cancel</a></div></section>"""
    return layout(title, body, engine=engine)


def problem_page(title: str, detail: str, *, engine: str) -> str:
    body = (
        f'<h1>{escape(title)}</h1><p class="problem">{escape(detail)}</p><p><a href="/">← all queues</a></p>'
    )
    return layout(title, body, engine=engine)


def _backlog_limit(settings: QueueSettings) -> str:
    """The queue's backlog limits, as its page states them."""
    parts = []
    if settings.max_backlog_messages is not None:
        parts.append(f"{settings.max_backlog_messages:,} messages")
    if settings.max_backlog_bytes is not None:
        parts.append(f"{settings.max_backlog_bytes:,} bytes")
    return f"backlog limit {' or '.join(parts)}" if parts else "no backlog limit"
