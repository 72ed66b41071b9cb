"""Regenerate the screenshots in docs/screenshots/: the dashboard (queue list, a queue's page, a
dead-letter queue's page, the topics) and the link-click analytics page, each at 390 px (a phone) and
1400 px (a desktop), in headless Chromium (scripts/install-chromium.sh installs it).

Nothing is staged: a real workload runs for `--seconds` (producers, consumers that fail on some
messages, a slow one that builds a backlog, visitors clicking links) while the dashboard samples
every 2 s, then the pages are photographed.

    .venv/bin/python scripts/screenshots.py [--seconds 90] [--out docs/screenshots]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import random
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.support.browser drives Chromium

import conveyor  # noqa: E402
from conveyor.demo.seed import visits  # noqa: E402
from conveyor.demo.service import create_service  # noqa: E402
from conveyor.http import create_api  # noqa: E402
from tests.demo.conftest import Pipeline, open_pipeline  # noqa: E402
from tests.support import browser  # noqa: E402

DEFAULT_SECONDS = 90.0
SAMPLE_SECONDS = 2.0
DASHBOARD_PAGES = {
    "dashboard": "/",
    "dashboard-queue": "/dashboard/queues/thumbnails?limit=10",
    "dashboard-dead-letters": "/dashboard/queues/emails-dlq?limit=10",
    "dashboard-topics": "/dashboard/topics",
}
ANALYTICS_PATH = "/analytics?window=5m"
# One address in 25 does not exist: its email ends in the dead-letter queue.
DOMAINS, DOMAIN_WEIGHTS = ("example.com", "example.invalid"), (24, 1)


class RecipientRefused(Exception):
    """What a mail server says about an address that does not exist."""


def build_app(url: str) -> conveyor.App:
    app = conveyor.App(url)

    @app.consumer(
        "emails", max_batch_size=20, max_batch_timeout=0.5, max_retries=1, dead_letter_queue="emails-dlq"
    )
    async def send_emails(batch: conveyor.MessageBatch, env: conveyor.Env) -> None:
        refused = []
        for message in batch.messages:
            if message.body["to"].endswith(".invalid"):
                refused.append(message.body["to"])
            else:
                message.ack()
        if refused:  # the messages not acked above are retried, then dead-lettered with this error
            raise RecipientRefused(f"550 5.1.1 <{refused[0]}>: recipient address rejected")

    @app.consumer("thumbnails", max_batch_size=5, max_batch_timeout=0.5, max_concurrency=1)
    async def make_thumbnails(batch: conveyor.MessageBatch, env: conveyor.Env) -> None:
        await asyncio.sleep(1.0)  # slower than the uploads arrive: a backlog builds up

    return app


async def produce(app: conveyor.App, seconds: float, rng: random.Random) -> None:
    emails, thumbnails = app.queue("emails"), app.queue("thumbnails")
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    tick = 0
    while loop.time() < end:
        burst = 30 if tick % 15 < 3 else 8
        await emails.send_batch(
            [
                {
                    "to": f"user{rng.randrange(10_000)}@{rng.choices(DOMAINS, DOMAIN_WEIGHTS)[0]}",
                    "template": rng.choice(["welcome", "receipt", "password-reset"]),
                }
                for _ in range(rng.randrange(burst // 2, burst))
            ]
        )
        await thumbnails.send_batch(
            [{"image": f"uploads/{tick}-{n}.jpg"} for n in range(rng.randrange(3, 9))]
        )
        tick += 1
        await asyncio.sleep(1.0)


async def visit(pipeline: Pipeline, seconds: float, rng: random.Random) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while loop.time() < end:
        for v in visits(rng.randrange(5, 40), rng=rng):
            await pipeline.client.get(v.path, headers=v.headers)
        await pipeline.settle()
        await asyncio.sleep(2.0)


@contextlib.asynccontextmanager
async def running_consumers(app: conveyor.App) -> AsyncIterator[None]:
    task = asyncio.create_task(app.run_consumers())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def photograph(base_url: str, pages: dict[str, str], out: Path) -> None:
    async with browser.chromium_browser() as chromium:
        for name, path in pages.items():
            for width in browser.WIDTHS:
                page = await browser.open_page(chromium, base_url + path, width=width)
                fits = await browser.overflow(page)
                if not fits.fits:
                    raise SystemExit(f"{name} overflows at {width} px: {fits.offenders}")
                shot = await browser.keep_screenshot(page, f"{name}-{width}", out)
                print(f"wrote {shot.relative_to(ROOT) if shot.is_relative_to(ROOT) else shot}")
                await page.context.close()


async def main(seconds: float, out: Path) -> None:
    rng = random.Random(29)
    with tempfile.TemporaryDirectory(prefix="conveyor-screenshots-") as folder:
        work = Path(folder)
        app = build_app(f"sqlite:///{work / 'queues.db'}")
        async with app:
            for name in ("emails", "emails-dlq", "thumbnails", "reports", "kitchen", "billing"):
                await app.ensure_queue(name)
            await app.queue("reports").send({"kind": "daily"})
            await app.queue("reports").pause()
            await app.subscribe("orders", queue="kitchen", types=["ORDER_UP", "ORDER_CANCELLED"])
            await app.subscribe("orders", queue="billing")
            api = create_api(app, token=None, dashboard_sample_seconds=SAMPLE_SECONDS)
            async with (
                open_pipeline(work, f"sqlite:///{work / 'store.db'}") as pipeline,
                browser.serving(api) as dashboard_url,
                browser.serving(create_service(pipeline.deps), lifespan="off") as service_url,
                running_consumers(app),
            ):
                print(f"running the workload for {seconds:g} s ...")
                await pipeline.app.queue("link-clicks").send({"type": "LINK_CLICK", "data": {"id": "x"}})
                await asyncio.gather(produce(app, seconds, rng), visit(pipeline, seconds, rng))
                await photograph(dashboard_url, DASHBOARD_PAGES, out)
                await photograph(service_url, {"analytics": ANALYTICS_PATH}, out)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=DEFAULT_SECONDS, help="how long the workload runs")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots", help="where the PNGs go")
    arguments = parser.parse_args()
    arguments.out.mkdir(parents=True, exist_ok=True)
    # the workload's failures are on purpose: their tracebacks would bury the script's output
    logging.basicConfig(level=logging.CRITICAL)
    asyncio.run(main(arguments.seconds, arguments.out))
