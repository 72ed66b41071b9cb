"""The dashboard's charts: SVG drawn on the server (no script, no CDN), over a fixed time span
ending now, so a queue with five minutes of history shows them at the right-hand end.

Every chart and line carries data attributes (`data-chart`, `data-series`, `data-last`) that the
browser tests read, and a `<title>` that browsers show as a tooltip.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html import escape

# Line colours by series index; the page's legend uses the same classes (s0, s1, ...).
COLOURS = ("#4f46e5", "#0ea5e9", "#f59e0b", "#dc2626")
GRID = "#e5e7eb"
MUTED = "#6b7280"

Scale = Callable[[float], float]
# Time labels of a span shorter than this show seconds too.
SHORT_SPAN_SECONDS = 600


@dataclass(frozen=True, slots=True)
class Series:
    name: str
    #: (Unix time, value), oldest first; None where the value is unknown (no rate yet)
    values: Sequence[tuple[float, float | None]]

    @property
    def last(self) -> float | None:
        known = [value for _, value in self.values if value is not None]
        return known[-1] if known else None


def nice_ceiling(value: float) -> float:
    """The smallest of 1, 2, 2.5, 5 x 10^k at or above `value`: an axis top people can read."""
    if value <= 0:
        return 1.0
    exponent = math.floor(math.log10(value))
    for step in (1.0, 2.0, 2.5, 5.0, 10.0):
        if step * 10**exponent >= value * (1 - 1e-12):
            return float(step * 10**exponent)
    return float(10 ** (exponent + 1))  # pragma: no cover


def number(value: float) -> str:
    """A short axis or tooltip label: 12, 0.25, 1.5, 2.3k, 41k, 1.2M."""
    if value >= 1_000_000:
        return f"{value / 1_000_000:.1f}M"
    if value >= 10_000:
        return f"{value / 1_000:.0f}k"
    if value >= 1_000:
        return f"{value / 1_000:.1f}k"
    if value == int(value):
        return f"{value:.0f}"
    return f"{value:.2f}" if value < 1 else f"{value:.1f}"


def raw(value: float | None) -> str:
    """A value for a data attribute: exact, and empty when unknown."""
    if value is None:
        return ""
    return str(int(value)) if value == int(value) else str(round(value, 3))


def clock(timestamp: float, *, seconds: bool = False) -> str:
    """HH:MM (or HH:MM:SS) in UTC (the page says so)."""
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).strftime("%H:%M:%S" if seconds else "%H:%M")


def _path(values: Sequence[tuple[float, float | None]], x: Scale, y: Scale) -> str:
    """An SVG path through the known values, lifting the pen where a value is unknown."""
    parts: list[str] = []
    pen_down = False
    for at, value in values:
        if value is None:
            pen_down = False
            continue
        parts.append(f"{'L' if pen_down else 'M'}{x(at):.1f},{y(value):.1f}")
        pen_down = True
    return " ".join(parts)


def _top(series: Sequence[Series]) -> float:
    known = [value for line in series for _, value in line.values if value is not None]
    return nice_ceiling(max(known, default=0.0))


def sparkline(series: Series, *, start: float, end: float, label: str) -> str:
    """A tiny line of one series from `start` to `end` (Unix times), for a table cell."""
    width, height, pad = 100.0, 24.0, 2.0
    top = _top([series])

    def x(at: float) -> float:
        return (at - start) / (end - start) * width if end > start else width

    def y(value: float) -> float:
        return pad + (height - 2 * pad) * (1 - value / top)

    last = series.last
    known = [value for _, value in series.values if value is not None]
    tip = f"{label}: now {number(known[-1])}, peak {number(max(known))}" if known else f"{label}: no readings"
    path = _path(series.values, x, y)
    marks = (
        f'<path d="{path}" fill="none" stroke="{COLOURS[0]}" stroke-width="1.5" '
        'vector-effect="non-scaling-stroke"/>'
    )
    return (
        f'<svg class="spark" viewBox="0 0 {width:g} {height:g}" preserveAspectRatio="none" role="img" '
        f'aria-label="{escape(tip)}" data-series="{escape(series.name)}" '
        f'data-last="{raw(last)}" xmlns="http://www.w3.org/2000/svg">'
        f"<title>{escape(tip)}</title>{marks if path else ''}</svg>"
    )


def line_chart(name: str, series: Sequence[Series], *, start: float, end: float, unit: str = "") -> str:
    """Lines of one or more series over [start, end] with a y-axis from 0 to a readable top."""
    width, height = 360, 150
    left, right, top_pad, bottom = 40, 8, 8, 20
    plot_w, plot_h = width - left - right, height - top_pad - bottom
    top = _top(series)

    def x(at: float) -> float:
        return left + ((at - start) / (end - start) * plot_w if end > start else plot_w)

    def y(value: float) -> float:
        return top_pad + plot_h * (1 - value / top)

    parts: list[str] = []
    for k in range(3):
        value = top * k / 2
        gy = y(value)
        parts.append(f'<line x1="{left}" x2="{width - right}" y1="{gy:.1f}" y2="{gy:.1f}" stroke="{GRID}"/>')
        parts.append(
            f'<text x="{left - 5}" y="{gy + 4:.1f}" text-anchor="end" font-size="11" fill="{MUTED}">'
            f"{number(value)}{escape(unit)}</text>"
        )
    for k, anchor in ((0, "start"), (1, "middle"), (2, "end")):
        at = start + (end - start) * k / 2
        parts.append(
            f'<text x="{x(at):.1f}" y="{height - 5}" text-anchor="{anchor}" font-size="11" fill="{MUTED}">'
            f"{clock(at, seconds=end - start < SHORT_SPAN_SECONDS)}</text>"
        )
    for i, line in enumerate(series):
        colour = COLOURS[i % len(COLOURS)]
        last = line.last
        path = _path(line.values, x, y)
        if path:
            parts.append(
                f'<path class="line" d="{path}" fill="none" stroke="{colour}" stroke-width="2" '
                f'stroke-linejoin="round" data-series="{escape(line.name)}" '
                f'data-last="{raw(last)}"><title>{escape(line.name)}: now '
                f"{'-' if last is None else number(last)}{escape(unit)}</title></path>"
            )
        known = [(at, value) for at, value in line.values if value is not None]
        if known:  # the latest value as a dot, so a single reading still shows
            at, value = known[-1]
            parts.append(f'<circle cx="{x(at):.1f}" cy="{y(value):.1f}" r="2.5" fill="{colour}"/>')
    if not any(line.last is not None for line in series):
        parts.append(
            f'<text x="{left + plot_w / 2}" y="{top_pad + plot_h / 2}" text-anchor="middle" font-size="12" '
            f'fill="{MUTED}">no readings yet</text>'
        )
    label = f"{name}: " + ", ".join(
        f"{line.name} {'-' if line.last is None else number(line.last)}" for line in series
    )
    return (
        f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" aria-label="{escape(label)}" '
        f'data-chart="{escape(name)}" xmlns="http://www.w3.org/2000/svg" '
        f'font-family="system-ui, sans-serif">{"".join(parts)}</svg>'
    )
