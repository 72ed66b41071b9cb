"""The dashboard: one server-rendered page of every queue, with a replay button per dead-letter
queue that holds messages. No JavaScript: the page reloads itself, the button is a form.

A queue's dead-letter queue is its consumer's `dead_letter_queue` (in the App or conveyor.toml),
else a queue named `<queue>-dlq` when one exists. Throughput is the net send and ack rate since
the page was last served (conveyor/admin/overview.py), so it shows from the first reload on.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import html
import time
from collections.abc import Mapping
from urllib.parse import parse_qs, urlencode

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from conveyor import admin
from conveyor import limits as L
from conveyor.admin import Sample, dead_letter_queues, net_rates
from conveyor.app import App
from conveyor.http.body import read_body
from conveyor.http.envelope import INVALID_INPUT, ApiError
from conveyor.types import QueueInfo, QueueStats

REFRESH_SECONDS = 5
FORM_LIMIT_BYTES = 4_096

STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 2rem; color: #222; }
table { border-collapse: collapse; }
th, td { padding: .35rem .8rem; border-bottom: 1px solid #ddd; text-align: right; }
th:first-child, td:first-child, td.text { text-align: left; }
.paused { color: #a60; font-weight: bold; }
.dead { color: #b00; }
.notice { background: #eef6ee; padding: .5rem .8rem; display: inline-block; }
.muted { color: #777; }
form { display: inline; }
"""

# The page runs no script and loads nothing; its one inline style is allowed by its hash, its one
# form posts to this server, and no other site may frame it (clickjacking a replay button).
STYLE_HASH = base64.b64encode(hashlib.sha256(STYLE.encode()).digest()).decode()
PAGE_HEADERS = {
    "Content-Security-Policy": (
        f"default-src 'none'; style-src 'sha256-{STYLE_HASH}'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}


def _age(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f}s"
    if seconds < 3_600:
        return f"{seconds / 60:.0f}m"
    if seconds < 86_400:
        return f"{seconds / 3_600:.1f}h"
    return f"{seconds / 86_400:.1f}d"


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}"


def _row(
    info: QueueInfo,
    stats: QueueStats,
    rates: tuple[float | None, float | None],
    dlq: str | None,
    dlq_stats: QueueStats | None,
) -> str:
    e = html.escape
    cells = [
        f"<td>{e(info.name)}</td>",
        f"<td>{stats.backlog:,}</td>",
        f"<td>{stats.in_flight:,}</td>",
        f"<td>{stats.delayed:,}</td>",
        f"<td>{_age(stats.oldest_age_seconds) if stats.total else '-'}</td>",
        f"<td>{_rate(rates[0])}</td>",
        f"<td>{_rate(rates[1])}</td>",
    ]
    if dlq is None or dlq_stats is None:
        cells.append('<td class="text muted">-</td>')
    else:
        movable = dlq_stats.backlog + dlq_stats.delayed
        text = f'{e(dlq)} <span class="{"dead" if dlq_stats.total else "muted"}">({dlq_stats.total:,})</span>'
        if movable:
            text += (
                ' <form method="post" action="/dashboard/replay">'
                f'<input type="hidden" name="dead_letter_queue" value="{e(dlq)}">'
                f'<input type="hidden" name="to" value="{e(info.name)}">'
                f'<button type="submit">replay {movable:,} to {e(info.name)}</button></form>'
            )
        cells.append(f'<td class="text">{text}</td>')
    cells.append('<td class="text paused">paused</td>' if stats.paused else '<td class="text">no</td>')
    return "<tr>" + "".join(cells) + "</tr>"


def render(
    app: App,
    rows: list[tuple[QueueInfo, QueueStats]],
    rates: Mapping[str, tuple[float | None, float | None]],
    dlqs: Mapping[str, str],
    notice: str | None,
) -> str:
    stats_by_name = {info.name: stats for info, stats in rows}
    body_rows = "\n".join(
        _row(
            info,
            stats,
            rates.get(info.name, (None, None)),
            dlqs.get(info.name),
            stats_by_name.get(dlqs.get(info.name, "")),
        )
        for info, stats in rows
    )
    if not rows:
        body_rows = '<tr><td class="text muted" colspan="9">No queues yet.</td></tr>'
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    notice_html = f'<p class="notice">{html.escape(notice)}</p>' if notice else ""
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="refresh" content="{REFRESH_SECONDS}; url=/">
<title>conveyor</title>
<style>{STYLE}</style>
</head>
<body>
<h1>conveyor</h1>
<p class="muted">{html.escape(app.url)} · {now} · refreshes every {REFRESH_SECONDS}s</p>
{notice_html}
<table>
<thead><tr><th>queue</th><th>backlog</th><th>in flight</th><th>delayed</th><th>oldest</th>
<th>send/s</th><th>ack/s</th><th>dead-letter queue</th><th>paused</th></tr></thead>
<tbody>
{body_rows}
</tbody>
</table>
</body>
</html>
"""


class Dashboard:
    def __init__(
        self, app: App, declared_dead_letter_queues: Mapping[str, str], body_timeout_seconds: float
    ) -> None:
        self.app = app
        self.body_timeout = body_timeout_seconds
        self.declared = dict(declared_dead_letter_queues)
        # the stats the page was last served with: rates are measured against them
        self._previous: Sample | None = None

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/", self.page, methods=["GET"]),
            Route("/dashboard/replay", self.replay, methods=["POST"]),
        ]

    async def page(self, request: Request) -> Response:
        rows = await admin.every_queue(self.app)
        sample = Sample(time.monotonic(), {info.name: stats for info, stats in rows})
        rates = {name: net_rates(self._previous, sample, name) for name in sample.stats}
        self._previous = sample
        dlqs = dead_letter_queues(
            [info.name for info, _ in rows], admin.declared_dead_letter_queues(self.app, self.declared)
        )
        return HTMLResponse(render(self.app, rows, rates, dlqs, _notice(request)), headers=PAGE_HEADERS)

    async def replay(self, request: Request) -> Response:
        raw = await read_body(request, FORM_LIMIT_BYTES, self.body_timeout)
        form = parse_qs(raw.decode(errors="replace"))
        dead_letter_queue = form.get("dead_letter_queue", [""])[0]
        to = form.get("to", [""])[0]
        if not dead_letter_queue or not to:
            raise ApiError(400, INVALID_INPUT, "the form needs dead_letter_queue and to")
        moved = await admin.replay(
            self.app, L.validate_queue_name(dead_letter_queue), L.validate_queue_name(to), None
        )
        query = urlencode({"replayed": moved, "from": dead_letter_queue, "to": to})
        # 303: the browser shows the page with GET, so a reload does not replay again
        return RedirectResponse(f"/?{query}", status_code=303)


def _notice(request: Request) -> str | None:
    """The line shown after a replay; built here from checked values, never echoed from the URL."""
    params = request.query_params
    moved, source, to = params.get("replayed", ""), params.get("from", ""), params.get("to", "")
    if not (
        moved.isdigit() and L.QUEUE_NAME_PATTERN.fullmatch(source) and L.QUEUE_NAME_PATTERN.fullmatch(to)
    ):
        return None
    return f"Replayed {int(moved):,} message(s) from {source} to {to}."
