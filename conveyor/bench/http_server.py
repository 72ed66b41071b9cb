"""The server of the HTTP cases: `conveyor serve`'s stack (create_api on conveyor's uvicorn server,
access log off) with one more route, `GET /bench/ping`, which answers an empty envelope without
touching the engine: the ceiling the other cases are compared with.

    python -m conveyor.bench.http_server URL TOKEN     # prints {"port": N} once it listens; SIGTERM stops it
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

import conveyor
from conveyor.http import create_api
from conveyor.http.envelope import ok
from conveyor.http.server import bind, make_server
from conveyor.processes import watch_parent

PING_PATH = "/bench/ping"


async def ping(request: Request) -> Response:
    return ok({})


async def serve(url: str, token: str) -> None:
    sock = bind("127.0.0.1", 0)
    async with conveyor.App(url, auto_create=False) as app:
        api = create_api(app, token=token)
        api.router.routes.insert(0, Route(PING_PATH, ping, methods=["GET"]))
        server = make_server(api, log_level="warning")
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, lambda: setattr(server, "should_exit", True))
        print(json.dumps({"port": sock.getsockname()[1]}), flush=True)
        await server.serve(sockets=[sock])


if __name__ == "__main__":
    watch_parent()  # stop with the benchmark, however it ends
    asyncio.run(serve(sys.argv[1], sys.argv[2]))
