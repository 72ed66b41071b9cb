"""A connection kept for the `send` script (single Redis, not Cluster).

A lone sender's loop pays for every command's trip through redis-py's pool: a lock, a check that
the connection has nothing to read (an extra turn of the event loop under a zero timeout) and an
event dispatched on release, which cost more than the script itself. Sends are written one at a
time per engine (the core's group commit), so one connection held for them does the work with
none of that: the script's EVALSHA written and its reply read, with the connection's own retries
(a broken connection reconnects, the write is repeated: a send is stored once by its ids).

The command is packed here (RESP, all but the arguments packed once per queue): redis-py's general packer
encodes each argument through several type checks, a third of a send's time in the client.

A connection idle for a while is checked as the pool checks one before it is used again (a
server may have closed it), so an occasional send does not meet a dead socket. A send that
finds the line in use (a second writer on the same engine) takes a pooled connection instead.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, NamedTuple

import redis.asyncio as aioredis
from redis.asyncio.connection import AbstractConnection
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError

# A connection idle this long is checked, as the pool checks one, before it is used again.
IDLE_CHECK_SECONDS = 1.0
# Packed command heads kept (one per queue a process sends to, in practice); past it, they are dropped.
MAX_PACKED_HEADS = 1_000


def bulk(value: str | bytes | int) -> bytes:
    """One argument as a RESP bulk string (as redis-py encodes it: str as UTF-8, int in decimal)."""
    if isinstance(value, bytes):
        data = value
    elif isinstance(value, str):
        data = value.encode()
    elif isinstance(value, int) and not isinstance(value, bool):
        data = b"%d" % value
    else:
        raise TypeError(f"a script argument must be str, bytes or int, not {type(value).__name__}")
    return b"$%d\r\n%b\r\n" % (len(data), data)


class Packed(NamedTuple):
    """Script arguments already packed as RESP bulk strings (`arguments` of them)."""

    data: bytes
    arguments: int

    @classmethod
    def of(cls, args: Sequence[str | bytes | int]) -> Packed:
        return cls(b"".join(map(bulk, args)), len(args))


class SendLine:
    def __init__(self, client: aioredis.Redis, script: AsyncScript) -> None:
        self._pool = client.connection_pool
        self._script = script
        self._connection: AbstractConnection | None = None
        self._heads: dict[tuple[str | int, ...], bytes] = {}
        self._last_used = 0.0
        #: a send is on the line (another writer takes a pooled connection)
        self.busy = False

    async def run(self, keys: Sequence[str], args: Sequence[str | bytes | int] | Packed) -> Any:
        """The script's reply, run on the kept connection; redis-py's errors as they are. `args`
        may come packed already (a lone send packs its constant ones once: `Packed`)."""
        packed = args if isinstance(args, Packed) else Packed.of(args)
        self.busy = True
        try:
            connection = self._connection
            if connection is None:
                connection = self._connection = await self._pool.get_connection()  # type: ignore[no-untyped-call]
            elif time.monotonic() - self._last_used > IDLE_CHECK_SECONDS:
                await self._pool.ensure_connection(connection)
            reply = await connection.retry.call_with_retry(
                lambda: self._evalsha(connection, keys, packed), lambda _: connection.disconnect()
            )
            self._last_used = time.monotonic()
            return reply
        finally:
            self.busy = False

    async def _evalsha(self, connection: AbstractConnection, keys: Sequence[str], args: Packed) -> Any:
        script = self._script
        try:
            await connection.send_packed_command(self._head(keys, args) + args.data, check_health=False)
            return await connection.read_response()
        except NoScriptError:  # the server lost its scripts (a restart): load it, then again
            await connection.send_command("SCRIPT", "LOAD", script.script, check_health=False)
            loaded = await connection.read_response()
            script.sha = loaded.decode() if isinstance(loaded, bytes) else loaded
            await connection.send_packed_command(self._head(keys, args) + args.data, check_health=False)
            return await connection.read_response()

    def _head(self, keys: Sequence[str], args: Packed) -> bytes:
        """EVALSHA's command up to its arguments (the RESP array's length, the script's hash,
        the keys), packed once per hash, keys and argument count."""
        sha = self._script.sha
        named: tuple[str | int, ...] = (sha, args.arguments, *keys)
        head = self._heads.get(named)
        if head is None:
            if len(self._heads) >= MAX_PACKED_HEADS:
                self._heads.clear()
            size = 3 + len(keys) + args.arguments
            command: tuple[str | int, ...] = ("EVALSHA", sha, len(keys), *keys)
            head = self._heads[named] = b"".join((b"*%d\r\n" % size, *map(bulk, command)))
        return head

    async def close(self) -> None:
        """Give the connection back to the pool (before the pool is closed)."""
        connection, self._connection = self._connection, None
        if connection is not None:
            await self._pool.release(connection)
