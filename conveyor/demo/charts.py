"""Server-side SVG charts: no JavaScript library, no CDN; the page is drawn before it is sent.

Every data mark carries `data-value` (and a `<title>` tooltip), which the browser test reads.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from html import escape

from conveyor.demo.worldmap import OUTLINES

PALETTE = ("#6366f1", "#0ea5e9", "#10b981", "#f59e0b", "#ef4444", "#8b5cf6", "#14b8a6", "#f97316")
INK = "#1f2937"
MUTED = "#6b7280"
GRID = "#e5e7eb"
# Longer bar labels are cut (the full text is in the tooltip).
MAX_LABEL = 30


def nice_ceiling(value: float) -> float:
    """The smallest of 1, 2, 2.5, 5 x 10^k that is >= value (an axis maximum people can read)."""
    if value <= 0:
        return 1.0
    exponent = math.floor(math.log10(value))
    for step in (1.0, 2.0, 2.5, 5.0, 10.0):
        candidate = step * 10**exponent
        if candidate >= value:
            return float(candidate)
    return float(10.0 ** (exponent + 1))  # pragma: no cover


def short_number(n: float) -> str:
    if n >= 10_000:
        return f"{n / 1000:.0f}k"
    if n >= 1_000:
        return f"{n / 1000:.1f}k"
    return f"{n:.0f}" if n == int(n) else f"{n:.1f}"


def _svg(width: int, height: int, body: str, label: str, kind: str) -> str:
    return (
        f'<svg class="chart chart-{kind}" viewBox="0 0 {width} {height}" width="100%" role="img" '
        f'aria-label="{escape(label)}" xmlns="http://www.w3.org/2000/svg" '
        f'font-family="system-ui, -apple-system, Segoe UI, sans-serif">{body}</svg>'
    )


def _empty(width: int, height: int, label: str, kind: str) -> str:
    text = (
        f'<text x="{width / 2}" y="{height / 2}" text-anchor="middle" fill="{MUTED}" '
        f'font-size="14">No clicks yet</text>'
    )
    return _svg(width, height, text, label, kind)


def timeline(
    points: Sequence[tuple[float, int]],
    bucket_seconds: int,
    *,
    width: int = 760,
    height: int = 240,
    ticks: int = 6,
    kind: str = "timeline",
) -> str:
    """Clicks over time: an area under a line, one point per bucket (empty buckets are zeros).

    The y-axis fits the largest bucket shown. `kind` names the chart (a page may draw a narrow
    and a wide one of the same points, for phones and desktops).
    """
    label = "Clicks over time"
    if not points:
        return _empty(width, height, label, kind)
    left, right, top, bottom = 44, 12, 14, 28
    plot_w, plot_h = width - left - right, height - top - bottom
    top_value = nice_ceiling(max(count for _, count in points))
    n = len(points)

    def x(i: int) -> float:
        return left + (plot_w * i / (n - 1) if n > 1 else plot_w / 2)

    def y(count: float) -> float:
        return top + plot_h * (1 - count / top_value)

    parts: list[str] = [
        f'<defs><linearGradient id="fill-{kind}" x1="0" y1="0" x2="0" y2="1">'
        f'<stop offset="0%" stop-color="{PALETTE[0]}" stop-opacity="0.35"/>'
        f'<stop offset="100%" stop-color="{PALETTE[0]}" stop-opacity="0.02"/></linearGradient></defs>'
    ]
    for k in range(5):
        value = top_value * k / 4
        gy = y(value)
        parts.append(f'<line x1="{left}" x2="{width - right}" y1="{gy:.1f}" y2="{gy:.1f}" stroke="{GRID}"/>')
        parts.append(
            f'<text class="y-label" x="{left - 6}" y="{gy + 4:.1f}" text-anchor="end" font-size="11" '
            f'fill="{MUTED}">'
            f"{short_number(value)}</text>"
        )
    line = " ".join(f"{'M' if i == 0 else 'L'}{x(i):.1f},{y(c):.1f}" for i, (_, c) in enumerate(points))
    area = f"{line} L{x(n - 1):.1f},{y(0):.1f} L{x(0):.1f},{y(0):.1f} Z"
    total = sum(c for _, c in points)
    parts.append(f'<path class="area" d="{area}" fill="url(#fill-{kind})" data-value="{total}"/>')
    parts.append(
        f'<path class="line" d="{line}" fill="none" stroke="{PALETTE[0]}" stroke-width="2.2" '
        'stroke-linejoin="round" stroke-linecap="round"/>'
    )
    for i, (start, count) in enumerate(points):
        when = dt.datetime.fromtimestamp(start).strftime("%H:%M:%S")
        if count:
            parts.append(
                f'<circle class="point" cx="{x(i):.1f}" cy="{y(count):.1f}" r="2.6" fill="#fff" '
                f'stroke="{PALETTE[0]}" stroke-width="1.6" data-value="{count}">'
                f"<title>{when}: {count} clicks</title></circle>"
            )
    ticks = min(ticks, n)
    for k in range(ticks):
        i = round(k * (n - 1) / (ticks - 1)) if ticks > 1 else 0
        stamp = dt.datetime.fromtimestamp(points[i][0]).strftime(
            "%H:%M:%S" if bucket_seconds < 60 else "%H:%M"
        )
        anchor = "start" if k == 0 and ticks > 1 else "end" if k == ticks - 1 and ticks > 1 else "middle"
        parts.append(
            f'<text x="{x(i):.1f}" y="{height - 8}" text-anchor="{anchor}" font-size="11" fill="{MUTED}">'
            f"{stamp}</text>"
        )
    return _svg(width, height, "".join(parts), label, kind)


def bars(
    items: Sequence[tuple[str, int]],
    *,
    label: str,
    kind: str,
    width: int = 420,
    row_height: int = 26,
    label_width: int = 150,
) -> str:
    """Horizontal bars, one per (label, count), longest first; each bar in its own colour."""
    if not items:
        return _empty(width, 3 * row_height, label, kind)
    height = row_height * len(items) + 4
    count_width = 52
    plot_w = width - label_width - count_width
    top_value = max(count for _, count in items)
    parts: list[str] = []
    for i, (name, count) in enumerate(items):
        y = 2 + i * row_height
        bar_w = max(2.0, plot_w * count / top_value)
        colour = PALETTE[i % len(PALETTE)]
        shown = name.removeprefix("https://").removeprefix("http://")
        shown = shown if len(shown) <= MAX_LABEL else shown[: MAX_LABEL - 1] + "…"
        parts.append(
            f'<text x="{label_width - 8}" y="{y + row_height / 2 + 4:.1f}" text-anchor="end" font-size="12" '
            f'fill="{INK}">{escape(shown)}<title>{escape(name)}</title></text>'
        )
        parts.append(
            f'<rect x="{label_width}" y="{y + 4}" width="{plot_w:.1f}" height="{row_height - 8}" rx="4" '
            'fill="#f3f4f6"/>'
        )
        parts.append(
            f'<rect class="bar" x="{label_width}" y="{y + 4}" width="{bar_w:.1f}" height="{row_height - 8}" '
            f'rx="4" fill="{colour}" data-label="{escape(name)}" data-value="{count}">'
            f"<title>{escape(name)}: {count}</title></rect>"
        )
        parts.append(
            f'<text x="{width - 4}" y="{y + row_height / 2 + 4:.1f}" text-anchor="end" font-size="12" '
            f'font-weight="600" fill="{INK}">{short_number(count)}</text>'
        )
    return _svg(width, height, "".join(parts), label, kind)


def world(locations: Sequence[tuple[float, float, int]], *, width: int = 760) -> str:
    """Where clicks come from: a bubble per place (area ∝ clicks) over rough continent outlines,
    equirectangular, from 80°N to 60°S."""
    label = "Clicks by location"
    north, south = 80.0, -60.0
    height = round(width * (north - south) / 360)
    if not locations:
        return _empty(width, height, label, "world")

    def x(lon: float) -> float:
        return (lon + 180) / 360 * width

    def y(lat: float) -> float:
        return (north - max(south, min(north, lat))) / (north - south) * height

    parts = [f'<rect width="{width}" height="{height}" rx="10" fill="#0f172a"/>']
    for meridian in range(-150, 180, 30):
        gx = x(meridian)
        parts.append(f'<line x1="{gx:.1f}" x2="{gx:.1f}" y1="0" y2="{height}" stroke="#1e293b"/>')
    for parallel in range(-30, 80, 30):
        colour = "#334155" if parallel == 0 else "#1e293b"  # the equator a little brighter
        gy = y(parallel)
        parts.append(f'<line x1="0" x2="{width}" y1="{gy:.1f}" y2="{gy:.1f}" stroke="{colour}"/>')
    for outline in OUTLINES:
        points = " ".join(f"{x(lon):.1f},{y(lat):.1f}" for lon, lat in outline)
        parts.append(f'<polygon points="{points}" fill="#1e293b" stroke="#334155" stroke-linejoin="round"/>')
    biggest = max(n for _, _, n in locations)
    for lat, lon, n in sorted(locations, key=lambda place: -place[2]):
        radius = 3 + 17 * math.sqrt(n / biggest)
        parts.append(
            f'<circle class="place" cx="{x(lon):.1f}" cy="{y(lat):.1f}" r="{radius:.1f}" fill="#38bdf8" '
            f'fill-opacity="0.5" stroke="#7dd3fc" stroke-width="1" data-value="{n}">'
            f"<title>{lat:.1f}, {lon:.1f}: {n} clicks</title></circle>"
        )
    return _svg(width, height, "".join(parts), label, "world")
