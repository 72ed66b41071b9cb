"""Begin coalescing: the batches of one consumer that start while a begin is under way mark their
read-ahead leases handed together, in the next engine call (see `Backend.begin`).

A handler may start only once its batch's begin is durable, so a begin costs each batch a round
trip; batches starting together share it. A lone batch begins after one turn of the event loop:
nothing waits for a group to fill. The batch that finds no begin under way writes the group
itself (no extra task).
"""

from __future__ import annotations

import asyncio

from conveyor.core import Core

_Waiting = tuple[list[str], "asyncio.Future[list[bool]]"]


class BeginGroup:
    def __init__(self, core: Core, queue: str) -> None:
        self._core = core
        self._queue = queue
        self._waiting: list[_Waiting] = []
        self._writing = False

    async def begin(self, lease_ids: list[str]) -> list[bool]:
        """Mark one batch's read-ahead leases handed; one status per lease id (False: not live).
        Raises what the engine raised for the group it went in."""
        future: asyncio.Future[list[bool]] = asyncio.get_running_loop().create_future()
        self._waiting.append((lease_ids, future))
        if not self._writing:
            self._writing = True
            try:
                # one turn of the event loop first: the batches of one lease, begun ahead in
                # the same turn, then go in one call (on SQLite a begin per batch cost more)
                await asyncio.sleep(0)
                while self._waiting:
                    group, self._waiting = self._waiting, []
                    await self._begin_group(group)
            finally:
                self._writing = False
                # cancelled mid-write: those still waiting are told, and give their leases back
                for _, left in self._waiting:
                    if not left.done():
                        left.set_exception(RuntimeError("the begin was cancelled"))
                self._waiting.clear()
        return await future

    async def _begin_group(self, group: list[_Waiting]) -> None:
        merged = [lease_id for lease_ids, _ in group for lease_id in lease_ids]
        try:
            statuses = await self._core.begin(self._queue, merged)
        except Exception as exc:  # each batch of the group gets the error (and gives its leases back)
            for _, future in group:
                if not future.done():
                    future.set_exception(exc)
            return
        except BaseException:
            for _, future in group:
                if not future.done():
                    future.set_exception(RuntimeError("the begin was cancelled"))
            raise
        at = 0
        for lease_ids, future in group:
            if not future.done():
                future.set_result(statuses[at : at + len(lease_ids)])
            at += len(lease_ids)
