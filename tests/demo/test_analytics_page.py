"""The analytics page: numbers right, the window the visitor picks, the reason of each dead
letter, and drawn without overflowing at a phone's and a desktop's width (headless Chromium)."""

from __future__ import annotations

import datetime as dt
import random
import re
import time
from types import SimpleNamespace

import pytest

from conveyor.demo import analytics
from conveyor.demo.charts import PALETTE, nice_ceiling, short_number
from conveyor.demo.models import LinkClickData
from conveyor.demo.seed import visits
from conveyor.demo.service import create_service
from tests.demo.conftest import Pipeline
from tests.support import browser
from tests.support.png import read_png

TILE_TEXTS = (
    "els => els.map(e => [e.querySelector('.label').textContent, e.querySelector('.value').textContent])"
)
# The box of the text itself (not of its block, which spans the width), per selector.
TEXT_BOXES = """selectors => selectors.map(selector => {
  const range = document.createRange();
  range.selectNodeContents(document.querySelector(selector));
  const box = range.getBoundingClientRect();
  return {top: box.top, bottom: box.bottom, left: box.left, right: box.right};
})"""


async def seeded(pipeline: Pipeline, count: int = 240) -> None:
    for v in visits(count, rng=random.Random(11)):
        await pipeline.client.get(v.path, headers=v.headers)
    await pipeline.settle()


def chart(dom: str, name: str) -> str:
    match = re.search(rf'<svg class="chart chart-{name}".*?</svg>', dom, re.S)
    assert match, f"no {name} chart in the page"
    return match.group(0)


def marks(dom: str, name: str, mark: str) -> list[int]:
    """The data-value of every `mark` (bar, point, place, area) inside the SVG chart `name`."""
    return [int(v) for v in re.findall(rf'class="{mark}"[^>]*?data-value="(\d+)"', chart(dom, name))]


def y_axis_top(dom: str, name: str) -> str:
    """The highest label of a timeline's y-axis (drawn bottom to top)."""
    labels: list[str] = re.findall(r'<text class="y-label"[^>]*>([^<]+)</text>', chart(dom, name))
    return labels[-1]


async def old_clicks(pipeline: Pipeline, count: int, hours_ago: float) -> None:
    """`count` clicks stored as if they happened `hours_ago` hours ago."""
    when = dt.datetime.now(dt.UTC) - dt.timedelta(hours=hours_ago)
    click = LinkClickData(
        id="spring-sale",
        accountId="acme",
        country="FR",
        destination="https://shop.acme.example/fr/soldes",
        latitude=None,
        longitude=None,
        timestamp=when,
    )
    await pipeline.store.insert_clicks([click] * count)


async def test_the_page_shows_the_stored_clicks(pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch) -> None:
    await seeded(pipeline)
    # One clock for both requests: the page and its fragment stamp the second they were drawn.
    frozen = time.time()
    monkeypatch.setattr(analytics, "time", SimpleNamespace(time=lambda: frozen))
    page = (await pipeline.client.get("/analytics")).text
    fragment = (await pipeline.client.get("/analytics?fragment=1")).text
    clicks = await pipeline.store.count_clicks()
    assert marks(page, "timeline", "area") == [clicks]
    assert sum(marks(page, "timeline", "point")) == clicks
    assert marks(page, "timeline-narrow", "area") == [clicks]  # the phone's drawing of the same
    top_countries = await pipeline.store.counts_by("country", analytics.TOP)
    assert marks(page, "countries", "bar") == [n for _, n in top_countries]
    assert marks(page, "links", "bar") == [
        n for _, n in await pipeline.store.counts_by("link_id", analytics.TOP)
    ]
    assert fragment in page and "<html" not in fragment  # what the refresh loop swaps in
    assert "Dead letters" in page and "Backlog" in page


async def test_the_window_picks_the_clicks_buckets_and_y_axis_of_the_timeline(pipeline: Pipeline) -> None:
    await seeded(pipeline, 60)
    recent = await pipeline.store.count_clicks()
    await old_clicks(pipeline, 500, hours_ago=3)  # a burst outside the last hour
    hour = (await pipeline.client.get("/analytics?window=1h")).text
    day = (await pipeline.client.get("/analytics?window=24h")).text
    five = (await pipeline.client.get("/analytics?window=5m&fragment=1")).text
    assert marks(hour, "timeline", "area") == [recent]
    assert marks(day, "timeline", "area") == [recent + 500]
    assert marks(five, "timeline", "area") == [recent]
    assert "per 1 min, last 1 hour" in hour and "per 30 min, last 24 hours" in day
    assert "per 5 s, last 5 min" in five
    for page in (hour, day, five):  # the axis fits the largest bucket in the window, not a burst outside it
        assert y_axis_top(page, "timeline") == short_number(
            nice_ceiling(max(marks(page, "timeline", "point")))
        )
    assert 'href="?window=24h" class="current"' in day
    refused = await pipeline.client.get("/analytics?window=7d")
    assert refused.status_code == 400 and "5m, 1h, 24h" in refused.text


async def test_each_dead_letter_shows_its_reason(pipeline: Pipeline) -> None:
    await pipeline.app.queue("link-clicks").send({"type": "LINK_CLICK", "data": {"id": "x"}})
    await pipeline.settle()
    page = (await pipeline.client.get("/analytics")).text
    listed = page[page.index('<ul class="dead-letters">') :].split("</ul>")[0]
    assert listed.count("<li") == 1
    assert "invalid message" in listed and "accountId" in listed  # the validation error, by field
    assert "LINK_CLICK · 1 attempt" in listed


async def test_an_empty_store_renders_without_charts(pipeline: Pipeline) -> None:
    response = await pipeline.client.get("/analytics")
    assert response.status_code == 200
    assert response.text.count("No clicks yet") == 6  # both timelines, the map and three bar charts
    assert "None: every event reached the table." in response.text


@pytest.mark.slow
@pytest.mark.parametrize("width", browser.WIDTHS)
async def test_the_page_fits_and_shows_the_engines_numbers_in_chromium(
    pipeline: Pipeline, width: int
) -> None:
    await seeded(pipeline)
    await pipeline.app.queue("link-clicks").send({"type": "LINK_CLICK", "data": {"id": "x"}})
    await pipeline.settle()
    clicks = await pipeline.store.count_clicks()
    dead = (await pipeline.app.queue("link-clicks-dlq").stats()).total
    service = create_service(pipeline.deps)
    async with browser.serving(service, lifespan="off") as base_url, browser.chromium_browser() as chromium:
        page = await browser.open_page(chromium, f"{base_url}/analytics", width=width)
        fits = await browser.overflow(page)
        tiles = await page.eval_on_selector_all(".kpi", TILE_TEXTS)
        header, updated = await page.evaluate(TEXT_BOXES, ["header p", ".updated"])
        shot = await browser.keep_screenshot(page, f"analytics-{width}")
    assert fits.fits, fits
    values = dict(tiles)
    assert values["Clicks stored"] == f"{clicks:,}" and values["Dead letters"] == f"{dead:,}" and dead == 1
    apart = (
        updated["top"] >= header["bottom"]
        or updated["bottom"] <= header["top"]
        or updated["left"] >= header["right"]
        or updated["right"] <= header["left"]
    )
    assert apart, f"the updated time {updated} overlaps the subtitle {header}"
    image = read_png(shot.read_bytes())
    assert image.width == width
    colours = image.colours(step=2)
    assert len(colours) > 200, "the screenshot is nearly blank"
    for hex_colour in PALETTE[:4]:  # the first bars of every bar chart
        rgb = tuple(int(hex_colour[i : i + 2], 16) for i in (1, 3, 5))
        painted = sum(
            n for c, n in colours.items() if max(abs(a - b) for a, b in zip(c, rgb, strict=True)) <= 8
        )
        assert painted > 20, f"hardly any {hex_colour} on the page: its bars were not drawn"
