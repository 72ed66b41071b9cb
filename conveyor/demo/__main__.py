"""`conveyor dev` or `python -m conveyor.demo [demo|serve|worker]`, from any directory.

demo    seed, start the service and a worker, drive visits, print a summary, serve the page
serve   the smart-link service and analytics page (uvicorn)
worker  the consumer that stores clicks
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from conveyor.processes import INTERRUPTED_EXIT_CODE, hang_up_with_parent, watch_parent

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
    demo.add_argument(
        "--port", type=int, default=None, help="the service's port (default 8000; 0: any free port)"
    )
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
    if command in ("serve", "worker"):
        watch_parent()  # started by the demo: stop when it ends, however it ends
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
    hang_up_with_parent()  # `make demo` killed alone (SIGHUP, say) stops the demo too
    try:
        asyncio.run(_until_signalled(job.run(once=args.once, **options)))
    except job.PortInUse as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        # Ctrl-C: the service and the worker were stopped in order; one line, the shell's code
        print("\nstopped (Ctrl-C)", file=sys.stderr)
        return INTERRUPTED_EXIT_CODE
    except asyncio.CancelledError:
        print("stopped (SIGTERM or SIGHUP)", file=sys.stderr)
    return 0


async def _until_signalled(job: Coroutine[Any, Any, object]) -> None:
    """Run the demo; SIGTERM and SIGHUP cancel it as Ctrl-C does, so its children stop in order."""
    task = asyncio.ensure_future(job)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(signum, task.cancel)
    try:
        await task
    finally:
        for signum in (signal.SIGTERM, signal.SIGHUP):
            loop.remove_signal_handler(signum)


def _make_parent(*urls: str) -> None:
    """Create the folder of each sqlite:/// URL's file (a fresh clone has no .conveyor/)."""
    for url in urls:
        if url.startswith("sqlite:///"):
            Path(url.removeprefix("sqlite:///").split("?")[0]).parent.mkdir(parents=True, exist_ok=True)


if __name__ == "__main__":
    raise SystemExit(main())
