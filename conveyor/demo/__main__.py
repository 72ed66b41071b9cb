"""`conveyor dev` or `python -m conveyor.demo [demo|serve|worker]`, from any directory.

demo    seed, start the service and a worker, drive visits, print a summary, serve the page
serve   the smart-link service and analytics page (uvicorn)
worker  the consumer that stores clicks
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path
from typing import Any

DEFAULT_QUEUE_URL = "sqlite:///.conveyor/linkclicks/queue.db"
DEFAULT_STORE_URL = "sqlite:///.conveyor/linkclicks/store.db"


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="python -m conveyor.demo", description=__doc__.split("\n")[0])
    commands = top.add_subparsers(dest="command")

    demo = commands.add_parser("demo", help="the whole pipeline on embedded SQLite (the default)")
    demo.add_argument(
        "--once", action="store_true", help="exit after the summary instead of serving the page"
    )
    demo.add_argument("--visits", type=int, default=None, help="how many visits the burst makes")
    demo.add_argument("--concurrency", type=int, default=None, help="visitors at a time")
    demo.add_argument("--port", type=int, default=None, help="preferred port (a free one if taken)")
    demo.add_argument("--dir", type=Path, default=None, help="where the SQLite files go")
    demo.add_argument("--queue-url", default=None, help="conveyor's URL (default: SQLite in --dir)")
    demo.add_argument("--store-url", default=None, help="postgresql://... (default: SQLite in --dir)")

    for name, help_text in (("serve", "the smart-link service"), ("worker", "the click consumer")):
        command = commands.add_parser(name, help=help_text)
        command.add_argument("--queue-url", default=DEFAULT_QUEUE_URL, help="conveyor's URL")
        command.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"])
        command.add_argument(
            "--store-url", default=DEFAULT_STORE_URL, help="sqlite:///... or postgresql://..."
        )
        if name == "serve":
            command.add_argument("--host", default="127.0.0.1")
            command.add_argument("--port", type=int, default=8000)
            command.add_argument("--no-send", action="store_true", help="do not queue clicks (benchmarks)")
    return top


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or (argv[0].startswith("-") and argv[0] not in ("-h", "--help")):
        argv = ["demo", *argv]  # `python -m conveyor.demo --once` runs the demo
    args = parser().parse_args(argv)
    command = args.command
    level = getattr(args, "log_level", "warning").upper()
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if command == "serve":
        import uvicorn

        from conveyor.demo.service import build_service

        _make_parent(args.queue_url, args.store_url)
        service = build_service(args.queue_url, args.store_url, background_send=not args.no_send)
        uvicorn.run(service, host=args.host, port=args.port, log_level=args.log_level, access_log=False)
        return 0
    if command == "worker":
        from conveyor.demo.consumer import build_worker

        _make_parent(args.queue_url, args.store_url)
        asyncio.run(build_worker(args.queue_url, args.store_url).run_worker())
        return 0

    from conveyor.demo import demo as job

    given = {
        "count": args.visits,
        "concurrency": args.concurrency,
        "port": args.port,
        "directory": args.dir,
        "queue_url": args.queue_url,
        "store_url": args.store_url,
    }
    options: dict[str, Any] = {key: value for key, value in given.items() if value is not None}
    try:
        asyncio.run(job.run(once=args.once, **options))
    except KeyboardInterrupt:
        print("\nstopped")
    return 0


def _make_parent(*urls: str) -> None:
    """Create the folder of each sqlite:/// URL's file (a fresh clone has no .conveyor/)."""
    for url in urls:
        if url.startswith("sqlite:///"):
            Path(url.removeprefix("sqlite:///").split("?")[0]).parent.mkdir(parents=True, exist_ok=True)


if __name__ == "__main__":
    raise SystemExit(main())
