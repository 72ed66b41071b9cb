"""Pages in headless Chromium for tests and for the docs' screenshots: Debian's /usr/bin/chromium
(scripts/install-chromium.sh installs it; the tests never do), driven by Playwright (no browser
download).

    async with serving(asgi_app) as base_url, chromium_browser() as browser:
        page = await open_page(browser, f"{base_url}/", width=390)
        assert (await overflow(page)).fits
        await keep_screenshot(page, "dashboard-390")
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import uvicorn
from playwright.async_api import Browser, Page, async_playwright
from starlette.types import ASGIApp

from tests.support.services import need

ROOT = Path(__file__).resolve().parents[2]
INSTALL_SCRIPT = ROOT / "scripts" / "install-chromium.sh"
# Where tests keep their screenshots (CI keeps the folder as the run's artefacts).
ARTIFACTS_ENV = "CONVEYOR_TEST_ARTIFACTS"
DEFAULT_ARTIFACTS = ROOT / "test-artifacts"
# The widths every page is checked at: a phone and a desktop.
WIDTHS = (390, 1400)
PAGE_HEIGHT = 900
LOAD_TIMEOUT_MS = 30_000
FLAGS = ("--no-sandbox", "--disable-gpu", "--disable-quic", "--disable-background-networking")


def chromium() -> str:
    """The Chromium binary. A test never installs it: when it is missing the test is skipped with
    the command that installs it, or fails with it under CONVEYOR_REQUIRE_SERVICES=1 (CI installs
    it first: .ci/run)."""
    found = shutil.which("chromium")
    need(
        "headless Chromium",
        found is not None,
        f"install it with `sudo sh {INSTALL_SCRIPT.relative_to(ROOT)}` (apt-get install chromium)",
    )
    assert found is not None
    return found


@contextlib.asynccontextmanager
async def chromium_browser() -> AsyncIterator[Browser]:
    binary = chromium()
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=binary, args=list(FLAGS))
        try:
            yield browser
        finally:
            await browser.close()


async def open_page(
    browser: Browser, url: str, *, width: int, password: str | None = None, height: int = PAGE_HEIGHT
) -> Page:
    """A new page `width` CSS pixels wide showing `url` (HTTP Basic with `password`, if given)."""
    credentials: Any = None if password is None else {"username": "operator", "password": password}
    context = await browser.new_context(
        viewport={"width": width, "height": height}, http_credentials=credentials, device_scale_factor=1
    )
    page = await context.new_page()
    response = await page.goto(url, timeout=LOAD_TIMEOUT_MS)
    assert response is not None and response.ok, f"{url}: {response and response.status}"
    return page


@dataclass(frozen=True)
class Overflow:
    viewport: int
    scroll_width: int
    #: elements reaching past the viewport's right edge (outside any scrolling box)
    offenders: list[str]

    @property
    def fits(self) -> bool:
        return self.scroll_width <= self.viewport and not self.offenders


# Every visible element whose box leaves the viewport sideways, unless a box that clips or scrolls
# (overflow other than visible) holds it: that one scrolls inside the page, the page does not.
_OVERFLOW_JS = """() => {
  const width = document.documentElement.clientWidth;
  const offenders = [];
  for (const el of document.querySelectorAll("body *")) {
    const box = el.getBoundingClientRect();
    if (box.width === 0 || box.height === 0) continue;
    if (box.right <= width + 0.5 && box.left >= -0.5) continue;
    let parent = el.parentElement, clipped = false;
    while (parent && parent !== document.body) {
      if (getComputedStyle(parent).overflowX !== "visible") { clipped = true; break; }
      parent = parent.parentElement;
    }
    if (!clipped) {
      const classes = el.getAttribute("class");
      const name = el.tagName.toLowerCase() + (classes ? "." + classes : "");
      offenders.push(`${name} [${Math.round(box.left)}, ${Math.round(box.right)}]`);
    }
  }
  const scrollWidth = document.documentElement.scrollWidth;
  return {viewport: width, scroll_width: scrollWidth, offenders: offenders.slice(0, 12)};
}"""


async def overflow(page: Page) -> Overflow:
    found = await page.evaluate(_OVERFLOW_JS)
    return Overflow(int(found["viewport"]), int(found["scroll_width"]), list(found["offenders"]))


def artifacts_dir() -> Path:
    folder = Path(os.environ.get(ARTIFACTS_ENV) or DEFAULT_ARTIFACTS)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


async def keep_screenshot(page: Page, name: str, folder: Path | None = None) -> Path:
    """A full-page PNG of `page` as `<folder>/<name>.png` (default: the test artefacts folder)."""
    path = (folder or artifacts_dir()) / f"{name}.png"
    await page.screenshot(path=str(path), full_page=True)
    return path


@contextlib.asynccontextmanager
async def serving(app: ASGIApp, *, lifespan: Literal["on", "off"] = "on") -> AsyncIterator[str]:
    """`app` on a free loopback port (uvicorn in this event loop), for a real browser; yields its
    base URL."""
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan=lifespan)
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
