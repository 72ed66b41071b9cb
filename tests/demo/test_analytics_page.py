"""The analytics page: numbers right, and drawn — checked in headless Chromium."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import re
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import uvicorn

from conveyor.demo import analytics
from conveyor.demo.charts import PALETTE
from conveyor.demo.seed import visits
from conveyor.demo.service import create_service
from tests.demo import browser
from tests.demo.conftest import Pipeline
from tests.demo.png import read_png

# Set to a path (e.g. docs/analytics.png) to keep the full-size screenshot the test takes.
KEEP_SCREENSHOT_ENV = "LINKCLICKS_SCREENSHOT"


async def seeded(pipeline: Pipeline, count: int = 240) -> None:
    for v in visits(count, rng=random.Random(11)):
        await pipeline.client.get(v.path, headers=v.headers)
    await pipeline.settle()


@contextlib.asynccontextmanager
async def serving(pipeline: Pipeline) -> AsyncIterator[str]:
    """The service on a free loopback port (uvicorn in this event loop), for a real browser."""
    server = uvicorn.Server(
        uvicorn.Config(
            create_service(pipeline.deps), host="127.0.0.1", port=0, log_level="warning", lifespan="off"
        )
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


def marks(dom: str, chart: str, mark: str) -> list[int]:
    """The data-value of every `mark` (bar, point, place, area) inside the SVG chart `chart`."""
    match = re.search(rf'<svg class="chart chart-{chart}".*?</svg>', dom, re.S)
    assert match, f"no {chart} chart in the page"
    return [int(v) for v in re.findall(rf'class="{mark}"[^>]*?data-value="(\d+)"', match.group(0))]


async def test_the_page_shows_the_stored_clicks(pipeline: Pipeline) -> None:
    await seeded(pipeline)
    page = (await pipeline.client.get("/analytics")).text
    fragment = (await pipeline.client.get("/analytics?fragment=1")).text
    clicks = await pipeline.store.count_clicks()
    assert marks(page, "timeline", "area") == [clicks]
    assert sum(marks(page, "timeline", "point")) == clicks
    top_countries = await pipeline.store.counts_by("country", analytics.TOP)
    assert marks(page, "countries", "bar") == [n for _, n in top_countries]
    assert marks(page, "links", "bar") == [
        n for _, n in await pipeline.store.counts_by("link_id", analytics.TOP)
    ]
    assert fragment in page and "<html" not in fragment  # what the refresh loop swaps in
    assert "Dead letters" in page and "Backlog" in page


async def test_an_empty_store_renders_without_charts(pipeline: Pipeline) -> None:
    response = await pipeline.client.get("/analytics")
    assert response.status_code == 200
    assert response.text.count("No clicks yet") == 5


@pytest.mark.slow
async def test_the_page_renders_its_charts_in_headless_chromium(pipeline: Pipeline, tmp_path: Path) -> None:
    binary = browser.chromium()
    await seeded(pipeline)
    clicks = await pipeline.store.count_clicks()
    async with serving(pipeline) as base_url:
        dom = await browser.dump_dom(binary, f"{base_url}/analytics")
        full = tmp_path / "analytics.png"
        await browser.screenshot(binary, f"{base_url}/analytics", full)
        small = tmp_path / "analytics-small.png"
        await browser.screenshot(binary, f"{base_url}/analytics", small, scale=0.5)
    # the rendered DOM holds a mark per data point
    assert marks(dom, "timeline", "area") == [clicks]
    assert sum(marks(dom, "countries", "bar")) > 0 and len(marks(dom, "countries", "bar")) == analytics.TOP
    assert len(marks(dom, "destinations", "bar")) > 1
    assert sum(marks(dom, "world", "place")) > 0
    # and the screenshot shows them: many colours, the charts' own among them
    image = read_png(small.read_bytes())
    assert (image.width, image.height) == (640, 800)
    colours = image.colours()
    assert len(colours) > 200, "the screenshot is nearly blank"
    white = sum(n for rgb, n in colours.items() if min(rgb) >= 245)
    assert white < 0.8 * image.width * image.height
    for hex_colour in PALETTE[:4]:  # the first bars of every bar chart
        rgb = tuple(int(hex_colour[i : i + 2], 16) for i in (1, 3, 5))
        painted = sum(
            n for c, n in colours.items() if max(abs(a - b) for a, b in zip(c, rgb, strict=True)) <= 8
        )
        assert painted > 50, f"hardly any {hex_colour} on the page: its bars were not drawn"
    keep = os.environ.get(KEEP_SCREENSHOT_ENV)
    if keep:
        shutil.copyfile(full, keep)
