"""The analytics page: read the store and the queues' health, draw SVG charts, fill the template.

The page polls `/analytics?fragment=1` (with the chosen `window`) every few seconds and swaps its
content in place (a `<meta refresh>` takes over when scripts are off). The clicks timeline covers
the window the visitor picks (`?window=5m`, `1h`, the default, or `24h`), in buckets sized to it,
with a y-axis fitted to the counts inside it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from html import escape
from pathlib import Path
from string import Template

import conveyor
from conveyor.background import BackgroundSender
from conveyor.demo import charts
from conveyor.demo.geo import country_name
from conveyor.demo.store import Store

TEMPLATES = Path(__file__).parent / "templates"
REFRESH_SECONDS = 3
# The windows the timeline offers, by their name in the URL, and the default.
WINDOWS = {"5m": 300, "1h": 3_600, "24h": 86_400}
DEFAULT_WINDOW = "1h"
# A window is drawn in at most this many buckets, each of a readable size.
TIMELINE_BUCKETS = 60
BUCKET_SIZES = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1_800, 3_600)
# The dead letters listed with their reasons (the oldest first, as peeked).
DEAD_LETTERS_SHOWN = 5
# Click-to-row delays are summarised over this recent window.
DELAY_WINDOW_SECONDS = 300
TOP = 8


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0-100) by the nearest-rank method; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass(frozen=True)
class QueueHealth:
    backlog: int
    in_flight: int
    delayed: int
    oldest_age_seconds: float
    dead_letters: int
    paused: bool
    #: the service's background sender, when the page is served by the service itself
    sends_pending: int | None = None
    sends_failed: int | None = None


class UnknownWindow(ValueError):
    """A `window` the page does not offer."""

    def __init__(self, window: str) -> None:
        super().__init__(f"window must be one of {', '.join(WINDOWS)}, got {window!r}")


def window_seconds(window: str) -> int:
    """The seconds of a window named in the URL; UnknownWindow for any other name."""
    if window not in WINDOWS:
        raise UnknownWindow(window[:20])
    return WINDOWS[window]


@dataclass(frozen=True)
class DeadLetter:
    """A dead letter of the clicks queue, as the page lists it."""

    id: str
    event_type: str
    error: str
    attempts: int
    dead_lettered_at: float


@dataclass(frozen=True)
class Snapshot:
    taken_at: float
    totals: dict[str, int]
    window: str
    bucket_seconds: int
    timeline: list[tuple[float, int]]
    countries: list[tuple[str, int]]
    destinations: list[tuple[str, int]]
    links: list[tuple[str, int]]
    locations: list[tuple[float, float, int]]
    delay_p50: float | None
    delay_p99: float | None
    health: QueueHealth
    dead_letters: list[DeadLetter]


def bucket_size(seconds: float) -> int:
    """The smallest readable bucket that splits `seconds` into at most TIMELINE_BUCKETS."""
    for size in BUCKET_SIZES:
        if seconds / size <= TIMELINE_BUCKETS:
            return size
    return BUCKET_SIZES[-1]


def fill_timeline(
    points: Sequence[tuple[float, int]], since: float, now: float, bucket: int
) -> list[tuple[float, int]]:
    """One (bucket start, count) per bucket from `since` to `now`, zeros where nothing happened."""
    counts = {int(start): count for start, count in points}
    first, last = int(since // bucket * bucket), int(now // bucket * bucket)
    return [(float(start), counts.get(start, 0)) for start in range(first, last + 1, bucket)]


async def queue_health(
    clicks: conveyor.Queue, dead_letters: conveyor.Queue, sender: BackgroundSender | None = None
) -> QueueHealth:
    stats, dead = await asyncio.gather(clicks.stats(), dead_letters.stats())
    return QueueHealth(
        backlog=stats.backlog,
        in_flight=stats.in_flight,
        delayed=stats.delayed,
        oldest_age_seconds=stats.oldest_age_seconds,
        dead_letters=dead.total,
        paused=stats.paused,
        sends_pending=None if sender is None else sender.pending,
        sends_failed=None if sender is None else sender.failed,
    )


async def recent_dead_letters(queue: conveyor.Queue, limit: int = DEAD_LETTERS_SHOWN) -> list[DeadLetter]:
    """Up to `limit` dead letters of `queue`, each with the reason its consumer gave up."""
    listed = []
    for message in await queue.peek(limit):
        body = message.body if isinstance(message.body, dict) else {}
        record = message.dead_letter
        listed.append(
            DeadLetter(
                id=message.id if record is None else record.original_id,
                event_type=str(body.get("type", "?")),
                error="(sent to the dead-letter queue directly)" if record is None else record.error,
                attempts=message.attempts if record is None else record.attempts,
                dead_lettered_at=message.timestamp.timestamp() if record is None else record.dead_lettered_at,
            )
        )
    return listed


async def snapshot(
    store: Store,
    clicks: conveyor.Queue,
    dead_letters: conveyor.Queue,
    sender: BackgroundSender | None = None,
    *,
    window: str = DEFAULT_WINDOW,
) -> Snapshot:
    now = time.time()
    span = window_seconds(window)
    since = now - span
    first = await store.first_click_at()
    bucket = bucket_size(span)
    # two gathers: asyncio.gather is typed for up to six awaitables
    totals, points, countries, destinations, links = await asyncio.gather(
        store.totals(),
        store.timeline(since, bucket),
        store.counts_by("country", TOP),
        store.counts_by("destination", TOP),
        store.counts_by("link_id", TOP),
    )
    locations, delays, health, reasons = await asyncio.gather(
        store.locations(200),
        store.click_delays(now - DELAY_WINDOW_SECONDS),
        queue_health(clicks, dead_letters, sender),
        recent_dead_letters(dead_letters),
    )
    return Snapshot(
        taken_at=now,
        totals=totals,
        window=window,
        bucket_seconds=bucket,
        timeline=fill_timeline(points, since, now, bucket) if first is not None else [],
        countries=countries,
        destinations=destinations,
        links=links,
        locations=locations,
        delay_p50=percentile(delays, 50),
        delay_p99=percentile(delays, 99),
        health=health,
        dead_letters=reasons,
    )


# -- rendering -------------------------------------------------------------------------------


@cache
def _template(name: str) -> Template:
    return Template((TEMPLATES / name).read_text(encoding="utf-8"))


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"


def _kpi(label: str, value: str, note: str = "", state: str = "") -> str:
    note_html = f'<div class="note">{escape(note)}</div>' if note else ""
    return (
        f'<div class="kpi {state}"><div class="label">{escape(label)}</div>'
        f'<div class="value">{escape(value)}</div>{note_html}</div>'
    )


def _health(health: QueueHealth) -> str:
    backlog_state = "ok" if health.backlog < 1_000 else "warn"
    dead_state = "ok" if health.dead_letters == 0 else "bad"
    tiles = [
        _kpi("Backlog", f"{health.backlog:,}", "ready to deliver", backlog_state),
        _kpi("In flight", f"{health.in_flight:,}", "leased by the worker"),
        _kpi("Oldest waiting", _seconds(health.oldest_age_seconds) if health.backlog else "-", ""),
        _kpi("Dead letters", f"{health.dead_letters:,}", "link-clicks-dlq", dead_state),
    ]
    if health.sends_pending is not None:
        failed = health.sends_failed or 0
        tiles.append(
            _kpi(
                "Sends pending",
                f"{health.sends_pending:,}",
                f"{failed:,} failed",
                "ok" if failed == 0 else "bad",
            )
        )
    state = "paused" if health.paused else "delivering"
    status = f'<div class="health-status">queue <b>link-clicks</b> is {state}</div>'
    return f'{status}<div class="tiles">{"".join(tiles)}</div>'


WINDOW_LABELS = {"5m": "5 min", "1h": "1 hour", "24h": "24 hours"}


def _windows(current: str) -> str:
    """The window picker: links (the page's script keeps the choice when it refreshes)."""
    chosen = ' class="current" aria-current="true"'
    links = "".join(
        f'<a href="?window={name}"{chosen if name == current else ""}>{WINDOW_LABELS[name]}</a>'
        for name in WINDOWS
    )
    return f'<nav class="windows" aria-label="time window">{links}</nav>'


def _dead_letters(letters: Sequence[DeadLetter], total: int) -> str:
    if not letters:
        return '<p class="empty">None: every event reached the table.</p>'
    items = "".join(
        f'<li data-attempts="{letter.attempts}"><div class="reason">{escape(letter.error)}</div>'
        f'<div class="meta">{escape(letter.event_type)} · {letter.attempts} attempt'
        f"{'s' if letter.attempts != 1 else ''} · "
        f"{dt.datetime.fromtimestamp(letter.dead_lettered_at).strftime('%H:%M:%S')} · "
        f"<code>{escape(letter.id)}</code></div></li>"
        for letter in letters
    )
    more = (
        f'<p class="more">{total - len(letters):,} more in link-clicks-dlq</p>'
        if total > len(letters)
        else ""
    )
    return f'<ul class="dead-letters">{items}</ul>{more}'


def render_content(snap: Snapshot) -> str:
    totals = snap.totals
    countries = [(f"{country_name(code)} ({code})", n) for code, n in snap.countries]
    stamp = dt.datetime.fromtimestamp(snap.taken_at).strftime("%H:%M:%S")
    bucket = f"{snap.bucket_seconds} s" if snap.bucket_seconds < 60 else f"{snap.bucket_seconds // 60} min"
    return _template("content.html").substitute(
        updated=stamp,
        kpis="".join(
            [
                _kpi("Clicks stored", f"{totals['clicks']:,}"),
                _kpi("Links", f"{totals['links']:,}", f"{totals['accounts']:,} accounts"),
                _kpi("Unknown-link visits", f"{totals['misses']:,}", "404s"),
                _kpi("Click → row p50", _seconds(snap.delay_p50), "last 5 minutes"),
                _kpi("Click → row p99", _seconds(snap.delay_p99), "last 5 minutes"),
            ]
        ),
        windows=_windows(snap.window),
        bucket=bucket,
        window=WINDOW_LABELS[snap.window],
        timeline=charts.timeline(snap.timeline, snap.bucket_seconds),
        timeline_narrow=charts.timeline(
            snap.timeline, snap.bucket_seconds, width=380, height=220, ticks=3, kind="timeline-narrow"
        ),
        world=charts.world(snap.locations),
        countries=charts.bars(countries, label="Clicks by country", kind="countries", label_width=170),
        destinations=charts.bars(
            snap.destinations, label="Clicks by destination", kind="destinations", label_width=215
        ),
        links=charts.bars(snap.links, label="Top links", kind="links", label_width=150),
        health=_health(snap.health),
        dead_letters=_dead_letters(snap.dead_letters, snap.health.dead_letters),
    )


def render(snap: Snapshot, *, fragment: bool = False) -> str:
    """The whole page, or only its content (what the page's refresh loop fetches)."""
    content = render_content(snap)
    if fragment:
        return content
    return _template("page.html").substitute(content=content, refresh_ms=REFRESH_SECONDS * 1000)
