"""A send whose reply was lost (the engine committed it, the client never heard) is tried again
with the same message ids and stored once (issue 26 item 6; docs/semantics.md, "Ambiguous
sends"): on each engine reached over the network, through a proxy that drops the replies.
(A NATS log stores a repeated send once too: by its Nats-Msg-Id, and by message id.)"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from urllib.parse import urlsplit

import pytest

import conveyor
from reliability.engines import with_option
from reliability.proxy import Proxy
from tests.reliability.conftest import NETWORK_ENGINES, network_engine
from tests.support.polling import eventually

WAIT_SECONDS = 30.0


@pytest.mark.parametrize("engine_name", NETWORK_ENGINES)
async def test_a_send_whose_reply_was_lost_is_retried_with_its_ids_and_stored_once(
    engine_name: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="conveyor.core")
    setup = network_engine(engine_name)
    async with setup.storage(tmp_path) as direct:
        parts = urlsplit(direct)
        assert parts.hostname is not None and parts.port is not None
        async with Proxy(parts.hostname, parts.port) as proxy:
            proxied = parts._replace(netloc=f"127.0.0.1:{proxy.port}").geturl()
            if engine_name == "postgres":
                proxied = with_option(proxied, "pool_timeout", "0.5")
            async with conveyor.App(proxied) as app, conveyor.App(direct) as observer:
                orders = app.queue("orders")
                await orders.send({"warm-up": True})
                proxy.blackhole()  # the server commits the send; its reply never arrives
                sending = asyncio.create_task(orders.send({"order": 7}))

                async def stored() -> bool:
                    bodies = [m.body for m in await observer.queue("orders").peek(10)]
                    return {"order": 7} in bodies

                await eventually(stored, "the first try was committed", WAIT_SECONDS)

                def given_up_once() -> bool:  # the engine's own retries are over: the core's take over
                    return any("trying again with the same ids" in r.getMessage() for r in caplog.records)

                await eventually(given_up_once, "the send failed once and is tried again", WAIT_SECONDS)
                proxy.heal()  # the next try reaches the server: the id is there already
                message_id = await asyncio.wait_for(sending, WAIT_SECONDS)
                copies = [m for m in await observer.queue("orders").peek(10) if m.body == {"order": 7}]
    assert [m.id for m in copies] == [message_id]
