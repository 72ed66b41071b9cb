"""The HTTP pull consumer: `conveyor serve` and a client that pulls, handles and acks over HTTP;
the client is SIGKILLed mid-batch (after recording a batch, before acking it) and started again."""

from __future__ import annotations

import asyncio
import importlib.util
import signal
import sys

import httpx

from reliability.processes import Supervisor
from reliability.roles.settings import PULL_ENV, PullSettings
from reliability.scenarios.base import Context, Scenario
from reliability.servers import free_port

SERVE_START_SECONDS = 30.0


def http_extra() -> str | None:
    if importlib.util.find_spec("starlette") is None or importlib.util.find_spec("uvicorn") is None:
        return "the http extra is not installed (pip install 'conveyor[http]')"
    return None


async def pull_client_killed(ctx: Context) -> None:
    count = ctx.size(2_000, 6_000)
    kills = ctx.size(3, 6)
    port = free_port()
    ctx.processes.start(
        "serve",
        [
            sys.executable,
            "-m",
            "conveyor",
            "--url",
            ctx.url,
            "serve",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        {"CONVEYOR_TOKEN": ""},
    )
    base_url = f"http://127.0.0.1:{port}"
    if not await _healthy(base_url):
        ctx.violations.append(f"conveyor serve did not answer /healthz within {SERVE_START_SECONDS} s")
        return
    ctx.worker_settings = ctx.worker_settings.but(visibility_timeout=2.0, dead_letter_queue=None)
    settings = PullSettings(ledger=str(ctx.ledger_dir), base_url=base_url, visibility_timeout_ms=2_000)
    client = ctx.processes.python(
        "pull-client", "reliability.roles.pull_client", env=settings.to_env(PULL_ENV)
    )
    supervisor = Supervisor(ctx.processes, client)
    ctx.supervisors.append(supervisor)
    ctx.start_producer(ctx.plan(tag="p", count=count, batch=10, rate=count / (ctx.budget * 0.6)))
    for number in range(1, kills + 1):
        goal = count * number // (kills + 1)
        if not await ctx.wait_completions(goal):
            return
        ctx.processes.kill(supervisor.child, signal.SIGKILL)


async def _healthy(base_url: str) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + SERVE_START_SECONDS
    async with httpx.AsyncClient(base_url=base_url, timeout=1.0) as client:
        while loop.time() < deadline:
            try:
                if (await client.get("/healthz")).status_code == 200:
                    return True
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.1)
    return False


SCENARIOS = [
    Scenario(
        "http-pull",
        "conveyor serve + an HTTP pull/ack client SIGKILLed mid-batch",
        pull_client_killed,
        issue="26",
        requires=http_extra,
    ),
]
