"""redis:// and rediss:// — Redis >= 6.2 (or Redis Cluster) through redis-py's asyncio client.

URL: `redis://[user:password@]host:port/db?prefix=conveyor&cluster=auto`. `prefix` starts every
key (default `conveyor`); `cluster` is `1`, `0` or `auto` (ask the server: INFO cluster). Every
other query option goes to redis-py (e.g. `socket_timeout=`, `ssl_cert_reqs=`).

Storage. The keys of one queue share the hash tag `{<prefix>:<queue>}` (so one Cluster slot):
message hashes, a `ready` sorted set scored by visible time, an `inflight` sorted set scored by
lease deadline, an `age` set for retention, a settings hash and a wake-up list. All of it, and
every script, is in `scripts.lua`. Every batch operation on one queue (send, lease, extend,
release, settle, stats, peek, purge, delete, sweep) is ONE Lua script (EVALSHA), atomic, timed by the
server's clock (`TIME`); the worker's clock is never used. The queue registry and the topic
subscriptions are two keys under the tag `{<prefix>}`.

Partitioned queues (docs/concepts/partitions.md). A queue of N > 1 partitions keeps partition 0
under the queue's tag and partition p under `{<prefix>:<queue>#p<p>}`: N sets of the keys above,
N slots, so a Cluster spreads them over its masters (a queue of one partition is laid out as
before). Each message goes to the partition `partitioning.place` picks (group, else dedup id,
else message id), so a group's order and a dedup id's claim are one partition's, one script's.
Every operation is then one script per partition it touches, run at once: a send or a batch of
outcomes is split by partition (on a single server a send stays one script over all of them); a
lease asks each partition for its share, from a starting partition that turns; a lease token
ends with "p<partition>", so an ack, retry, renewal or release goes to its partition without a
look anywhere else; stats, peek, purge, pause and delete by id ask every partition. Consumers
block on partition 0's `wake` list: on a single server every partition's scripts push there;
on a Cluster the client pushes there after a script that made messages deliverable in another
partition (one more command after such a send). Replays and dead letters into or out of a
partitioned queue take the two-phase path below (their copies placed in Python).

Operations that span queues:
- Single Redis: one script over every queue's keys, so they are atomic: `send_many` naming
  several queues (durable topic fan-out), a dead-letter move within `settle`, a replay `move`.
- Redis Cluster: no script may touch two slots, so these become idempotent two-phase moves that
  can duplicate but never lose:
  * send_many first checks that every queue exists (QueueNotFound, nothing stored), then writes
    one script per queue (per partition of a partitioned queue, whose send to several
    partitions is atomic per partition, not as a whole). Writes are idempotent by message id,
    so when a queue vanishes between the check and the write (the core then recreates it and
    sends everything again) or a write is retried, nothing is stored twice.
  * settle applies acks and retries at once and reads the dead letters it must move to another
    slot; it copies them into their dead-letter queue (new id, idempotent), then deletes each
    original still held under its lease. If that lease was lost meanwhile the copy is deleted
    again; a crash between copy and delete leaves the original to be redelivered when its lease
    expires (a duplicate dead letter, never a lost one).
  * replay leases a chunk of messages to the mover (no attempt counted, held for MOVE_HOLD_SECONDS),
    copies them to the destination with the same ids, then deletes the originals still held. A
    crash in between lets the hold expire: the messages are back in the source as well (at least
    once).

Wake-ups without polling: every script that makes a message deliverable pushes up to 4 tokens on
the queue's `wake` list; `wait_for_messages` BLPOPs it (on a pooled connection of its own) with a
timeout bounded by the next due time in `ready`/`inflight` (a delayed message or an expiring
lease), so idle consumers cost nothing. A token left by a send nobody waited for makes one
spurious wake-up, which is harmless.

Failures: redis-py reconnects with exponential backoff; while Redis is unreachable every
operation raises BackendUnavailable and the worker backs off and tries again. Redis keeps data in
memory: with persistence off (`save ""`, `appendonly no`) a restart loses every queue, message and
subscription (queues are recreated on the next send; messages sent before are gone). With AOF
(`appendfsync always`) nothing acknowledged is lost; with `everysec`, up to a second of writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import re
import socket
from collections.abc import Awaitable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis.asyncio as aioredis
import redis.exceptions as redis_errors
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.commands.core import AsyncScript
from redis.crc import key_slot

from conveyor import limits as L
from conveyor.backends.base import AHEAD, Backend, handed_token, is_ahead, make_lease_id, new_token
from conveyor.backends.partitioning import place
from conveyor.backends.redis import connecting
from conveyor.backends.redis.send_line import Packed, SendLine, bulk
from conveyor.backends.scripts import load_named
from conveyor.backends.urls import redact
from conveyor.errors import (
    BackendUnavailable,
    CannotConnect,
    InvalidURL,
    MessageLeased,
    QueueAlreadyExists,
    QueueFull,
    QueueNotFound,
)
from conveyor.headers import dead_letter_headers, load_headers
from conveyor.limits import check_room
from conveyor.types import (
    CONTENT_TYPES,
    SYSTEM_CLOCK,
    Clock,
    ContentType,
    DeadLetterInfo,
    Lease,
    LeasedMessage,
    Outcomes,
    OutgoingMessage,
    PullConsumer,
    QueueInfo,
    QueueSettings,
    QueueStats,
    StoredMessage,
    Subscription,
    WorkerInfo,
)

DEFAULT_PREFIX = "conveyor"
PREFIX_PATTERN = re.compile(r"[A-Za-z0-9_.:-]{1,100}")
CLUSTER_VALUES = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False, "auto": None}
# The per-queue keys, in the order the scripts expect them (see scripts.lua).
QUEUE_KEY_SUFFIXES = ("meta", "msgs", "state", "ready", "inflight", "age", "wake", "group", "held")
# A lone send's constant `send` script arguments, packed once: before its message, one
# partition, limits not checked by the client, one message; after it, no group and no dedup id.
LONE_FIRST = Packed.of((1, 0, 1))
LONE_LAST = Packed.of((0, 0))
LONE_COUNT = LONE_FIRST.arguments + 2 + LONE_LAST.arguments
META, READY, INFLIGHT, AGE, WAKE, HELD = (
    QUEUE_KEY_SUFFIXES.index(name) for name in ("meta", "ready", "inflight", "age", "wake", "held")
)
# The settings fields a QueueInfo is made of, in the order `_queue_info` takes them.
INFO_FIELDS = ("delay", "retention", "paused", "created", "maxmsgs", "maxbytes", "dedup", "pull", "parts")
# Messages moved or swept per script call: bounds how long one script holds the server.
CHUNK = 1_000
# How long a cross-slot replay holds the messages it is copying before they return to the source.
MOVE_HOLD_SECONDS = 60.0
# A lease token of a partitioned queue ends with this mark and its partition ("...p3"): acks,
# retries and renewals go straight to that partition. Tokens are hex otherwise (no "p").
PARTITION_MARK = "p"
# How many times a send is placed again after the queue's partition count turned out to differ
# from the one this process knew (the queue was deleted and made again) or its limits to be set.
PLACE_ATTEMPTS = 4
# TCP keepalive: a peer silent for 10 s is probed every 5 s and dropped after 3 misses (Linux).
KEEPALIVE_OPTIONS = {
    getattr(socket, name): value
    for name, value in (("TCP_KEEPIDLE", 10), ("TCP_KEEPINTVL", 5), ("TCP_KEEPCNT", 3))
    if hasattr(socket, name)
}
# A script pushes at most this many wake-up tokens (WAKE_TOKENS in scripts.lua).
WAKE_TOKENS = 4
# One BLPOP blocks at most this long; the caller simply waits again.
MAX_BLOCK_SECONDS = 5.0
# Below this a blocking pop is not worth a round trip: sleep instead.
MIN_BLOCK_SECONDS = 0.01
UNAVAILABLE = (
    redis_errors.ConnectionError,
    redis_errors.TimeoutError,
    redis_errors.ClusterError,
    redis_errors.SlotNotCoveredError,
)

AnyRedis = aioredis.Redis | RedisCluster
# (queue, partition): where a partition's keys are
Shard = tuple[str, int]


def _load_scripts() -> dict[str, str]:
    """Every script of scripts.lua, each preceded by its `lib` section (the shared functions)."""
    sections = load_named("conveyor.backends.redis", "scripts.lua")
    lib = sections.pop("lib")
    return {name: f"{lib}\n{body}" for name, body in sections.items()}


SCRIPTS = _load_scripts()


@dataclass(frozen=True)
class RedisURL:
    """A conveyor Redis URL split into what redis-py gets and conveyor's own options."""

    client_url: str
    prefix: str
    cluster: bool | None  # None: ask the server

    @property
    def where(self) -> str:
        """host:port, without credentials, for error messages."""
        parts = urlsplit(self.client_url)
        return f"{parts.hostname or 'localhost'}:{parts.port or 6379}"


def parse_redis_url(url: str) -> RedisURL:
    parts = urlsplit(url)
    options = parse_qsl(parts.query, keep_blank_values=True)
    mine = {key: value for key, value in options if key in ("prefix", "cluster")}
    prefix = mine.get("prefix", DEFAULT_PREFIX)
    if PREFIX_PATTERN.fullmatch(prefix) is None:
        raise InvalidURL(
            f"invalid prefix {prefix!r} in {redact(url)!r}: use 1 to 100 characters of A-Z, a-z, 0-9, _ . : -"
        )
    cluster_text = mine.get("cluster", "auto").lower()
    if cluster_text not in CLUSTER_VALUES:
        raise InvalidURL(f"cluster must be 1, 0 or auto in {redact(url)!r}, got {cluster_text!r}")
    rest = urlencode([(key, value) for key, value in options if key not in mine])
    return RedisURL(urlunsplit(parts._replace(query=rest)), prefix, CLUSTER_VALUES[cluster_text])


def _us(seconds: float) -> int:
    return round(seconds * 1_000_000)


def _seconds(microseconds: bytes | int) -> float:
    return int(microseconds) / 1_000_000


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


_CONTENT_TYPES: dict[bytes, ContentType] = {name.encode(): name for name in CONTENT_TYPES}


def _record(raw: bytes) -> tuple[ContentType, int, bytes, bytes]:
    """A stored message record: "<content type>:<timestamp µs>:<dead-letter JSON length>:<JSON><body>".
    Returns content type, timestamp µs, dead-letter JSON (b"" for none) and body."""
    content_type, timestamp, length, rest = raw.split(b":", 3)
    kind = _CONTENT_TYPES.get(content_type)
    if kind is None:
        raise ValueError(f"unknown content type {content_type!r} stored in Redis")
    if length == b"0":
        return kind, int(timestamp), b"", rest
    size = int(length)
    return kind, int(timestamp), rest[:size], rest[size:]


def _details(raw: bytes) -> tuple[DeadLetterInfo | None, dict[str, str] | None]:
    """A record's JSON section: the dead-letter record's fields (when it is one) and the
    message's headers under "headers" (records written before headers hold the record only)."""
    if not raw:
        return None, None
    data = json.loads(raw)
    headers = load_headers(data.pop("headers", None))
    return (DeadLetterInfo.from_dict(data) if "original_id" in data else None), headers


def _section(dead_letter: DeadLetterInfo | None, headers: dict[str, str] | None) -> str:
    """The JSON section of a record (see `_details`): "" when there is neither."""
    if dead_letter is None and headers is None:
        return ""
    data: dict[str, Any] = {} if dead_letter is None else dead_letter.to_dict()
    if headers is not None:
        data["headers"] = headers
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"))


def _headers_only(raw: bytes) -> str:
    """A record's JSON section without its dead-letter record, as a replay keeps it."""
    return _section(None, _details(raw)[1])


def _partition_token(token: str, partition: int) -> str:
    return f"{token}{PARTITION_MARK}{partition}"


def _lease_of(lease_id: str) -> Lease:
    message_id, _, token = lease_id.partition(".")
    return message_id, token, 0


def _token_partition(token: str) -> int:
    """The partition a lease token names: 0 for one without (a queue of one partition); a
    number past the queue's count names no live lease."""
    _, mark, number = token.rpartition(PARTITION_MARK)
    return int(number) if mark and number.isascii() and number.isdigit() else 0


def _queue_info(name: str, fields: Sequence[bytes | None]) -> QueueInfo | None:
    delay, retention, paused, created, most_messages, most_bytes, dedup, pull, partitions = fields
    if delay is None or retention is None or created is None:
        return None
    settings = QueueSettings(
        delivery_delay=_seconds(delay),
        retention_seconds=_seconds(retention),
        max_backlog_messages=int(most_messages) if most_messages else None,
        max_backlog_bytes=int(most_bytes) if most_bytes else None,
        # a queue created before deduplication has the default window
        dedup_window_seconds=L.DEFAULT_DEDUP_WINDOW_SECONDS if dedup is None else _seconds(dedup),
        # '' or missing (a queue from before pull consumer settings): none
        pull_consumer=PullConsumer.from_json(pull),
        # a queue created before partitions has one
        partitions=int(partitions) if partitions else L.DEFAULT_PARTITIONS,
    )
    return QueueInfo(name=name, settings=settings, paused=paused == b"1", created_at=_seconds(created))


def _settings_args(settings: QueueSettings) -> list[str | int]:
    """A queue's settings as the create_queue and update_queue scripts take them."""
    most_messages, most_bytes = settings.max_backlog_messages, settings.max_backlog_bytes
    return [
        _us(settings.delivery_delay),
        _us(settings.retention_seconds),
        "" if most_messages is None else most_messages,
        "" if most_bytes is None else most_bytes,
        _us(settings.dedup_window_seconds),
        "" if settings.pull_consumer is None else settings.pull_consumer.to_json(),
        settings.partitions,
    ]


@dataclass(slots=True)
class _Write:
    """One message for the `send` script (not frozen: one is made per message sent)."""

    id: str
    content_type: str
    body: bytes
    delay_us: int | None = None  # None: the queue's delivery delay
    dead_letter: str = ""
    timestamp_us: int | None = None  # None: now
    dedup_id: str | None = None
    group: str | None = None

    def args(self) -> list[str | bytes]:
        """The id, and the rest packed in one argument (see the `send` script): the client
        library's cost is per argument, so two per message rather than six."""
        delay = "" if self.delay_us is None else self.delay_us
        timestamp = "" if self.timestamp_us is None else self.timestamp_us
        dead = self.dead_letter.encode()
        head = f"{delay}:{timestamp}:{self.content_type}:{len(dead)}:".encode()  # length in bytes
        return [self.id, head + dead + self.body if dead else head + self.body]

    @classmethod
    def of(cls, message: OutgoingMessage) -> _Write:
        return cls(
            id=message.id,
            content_type=message.content_type,
            body=message.body,
            delay_us=None if message.delay_seconds is None else _us(message.delay_seconds),
            dead_letter=""
            if message.dead_letter is None and message.headers is None
            else _section(message.dead_letter, message.headers),
            dedup_id=message.dedup_id,
            group=message.group,
        )


class _PlaceAgain(Exception):
    """A send's scripts refused it before writing: place the messages again (this process
    learnt the queue's partition count, or that it has limits to sum first)."""


@dataclass(frozen=True, slots=True)
class _Move:
    """A dead letter on its way to a queue in another Cluster slot."""

    destination: str
    held: tuple[str, str]  # (message id, lease token) it is held under in the source


class RedisBackend(Backend):
    engine = "redis"
    uses_local_clock = False

    def __init__(self, url: str, *, clock: Clock = SYSTEM_CLOCK) -> None:
        super().__init__(url, clock=clock)
        self.options = parse_redis_url(url)
        self.prefix = self.options.prefix
        self._client: AnyRedis | None = None
        self._cluster = False
        self._scripts: dict[str, AsyncScript] = {}
        # the connection kept for sends (single Redis only; send_line.py)
        self._send_line: SendLine | None = None
        self._keys: dict[str, list[str]] = {}
        self._shards: dict[Shard, list[str]] = {}
        # the partition count of each queue seen: fixed at creation, so read once (a send placed
        # for a count the queue no longer has is refused by its script and placed again)
        self._parts: dict[str, int] = {}
        # partitioned queues with backlog limits: a send sums their partitions before it writes
        self._bounded: set[str] = set()
        # where the next lease of a partitioned queue starts (turns, so every partition is served)
        self._rotation: dict[str, int] = {}
        self._registry = f"{{{self.prefix}}}:queues"
        self._subscriptions = f"{{{self.prefix}}}:subscriptions"
        # worker heartbeats: id -> WorkerInfo.to_dict as JSON
        self._workers = f"{{{self.prefix}}}:workers"

    def sibling(self) -> RedisBackend:
        return RedisBackend(self.url, clock=self.clock)

    @property
    def cluster(self) -> bool:
        """True when connected to a Redis Cluster."""
        return self._cluster

    # -- lifecycle ---------------------------------------------------------------------------

    def _client_options(self) -> dict[str, Any]:
        # URL query options override these (redis-py lets the URL win). No socket_timeout: with
        # one, redis-py sends through asyncio.wait_for, which on Python 3.11 can swallow a
        # cancellation (a stopping worker would then sit out its BLPOP); TCP keepalive finds a
        # silently dead server instead.
        return {
            "retry": Retry(ExponentialBackoff(cap=1.0, base=0.05), 3),
            "socket_connect_timeout": 5.0,
            "socket_keepalive": True,
            "socket_keepalive_options": KEEPALIVE_OPTIONS,
        }

    async def connect(self) -> None:
        if self._client is not None:
            return
        try:
            await self._connect()
        except redis_errors.RedisError as exc:
            if not connecting.cannot_heal(exc):
                raise
            where = self.options.where
            raise CannotConnect(f"cannot connect to Redis at {where}: {connecting.cause(exc)}") from None

    async def _connect(self) -> None:
        with self._available(heals_only=True):
            cluster = self.options.cluster
            if cluster is None:
                cluster = await self._detect_cluster()
            client: AnyRedis
            if cluster:
                client = RedisCluster.from_url(self.options.client_url, **self._client_options())
                try:
                    await client.initialize()
                except redis_errors.RedisClusterException as exc:  # no node reachable
                    await client.aclose()
                    raise BackendUnavailable(f"Redis Cluster at {self.options.where}: {exc}") from exc
            else:
                client = aioredis.Redis.from_url(self.options.client_url, **self._client_options())
                try:
                    await client.ping()
                except BaseException:
                    await client.aclose()
                    raise
        self._client = client
        self._cluster = cluster
        # register_script only hashes the text; RedisCluster has it too (loaded on every primary)
        self._scripts = {name: client.register_script(text) for name, text in SCRIPTS.items()}  # type: ignore[misc]
        if isinstance(client, aioredis.Redis):
            self._send_line = SendLine(client, self._scripts["send"])

    async def _detect_cluster(self) -> bool:
        probe = aioredis.Redis.from_url(self.options.client_url, **self._client_options())
        try:
            info = await probe.info("cluster")
            return bool(info.get("cluster_enabled"))
        finally:
            await probe.aclose()

    async def close(self) -> None:
        client, self._client = self._client, None
        line, self._send_line = self._send_line, None
        if line is not None:
            await line.close()
        if client is not None:
            await client.aclose()

    @contextlib.contextmanager
    def _available(self, *, heals_only: bool = False) -> Iterator[None]:
        """Redis's connection errors as BackendUnavailable; with `heals_only` (a first connect),
        those that cannot heal pass through, for `connect` to raise as CannotConnect."""
        try:
            yield
        except UNAVAILABLE as exc:
            if heals_only and connecting.cannot_heal(exc):
                raise
            raise BackendUnavailable(f"Redis at {self.options.where} is unavailable: {exc}") from exc

    @property
    def client(self) -> AnyRedis:
        if self._client is None:
            raise RuntimeError("the Redis backend is not connected")
        return self._client

    async def _run(self, script: str, keys: Sequence[str], args: Sequence[str | bytes | int]) -> Any:
        if self._client is None:
            raise RuntimeError("the Redis backend is not connected")
        with self._available():
            return await self._scripts[script](keys=keys, args=args)

    def _queue_keys(self, queue: str) -> list[str]:
        keys = self._keys.get(queue)
        if keys is None:
            tag = f"{{{self.prefix}:{queue}}}"
            keys = self._keys[queue] = [f"{tag}:{suffix}" for suffix in QUEUE_KEY_SUFFIXES]
        return keys

    def _shard_keys(self, queue: str, partition: int) -> list[str]:
        """The keys of one partition of a queue: partition 0 has the queue's own (a queue of one
        partition is unchanged); p >= 1 the tag `{<prefix>:<queue>#p<p>}` ('#' is in no queue
        name). On a single server every partition's wake-ups go to the queue's one `wake` list,
        which consumers block on; a Cluster script cannot reach it (another slot), so the client
        pushes there after the script (`_wake_first`)."""
        if partition == 0:
            return self._queue_keys(queue)
        keys = self._shards.get((queue, partition))
        if keys is None:
            tag = f"{{{self.prefix}:{queue}#p{partition}}}"
            keys = [f"{tag}:{suffix}" for suffix in QUEUE_KEY_SUFFIXES]
            if not self._cluster:
                keys[WAKE] = self._queue_keys(queue)[WAKE]
            self._shards[(queue, partition)] = keys
        return keys

    def _forget(self, queue: str) -> None:
        self._keys.pop(queue, None)
        self._parts.pop(queue, None)
        self._bounded.discard(queue)
        self._rotation.pop(queue, None)
        for shard in [shard for shard in self._shards if shard[0] == queue]:
            del self._shards[shard]

    async def _partitions(self, names: Sequence[str]) -> dict[str, int]:
        """The partition count of each queue (1 for a queue that does not exist: its send is
        then refused as QueueNotFound); a round trip only for queues not seen before."""
        unknown = [name for name in names if name not in self._parts]
        for name, (parts, created) in zip(
            unknown, await self._meta(unknown, "parts", "created"), strict=True
        ):
            if created is not None:
                self._parts[name] = int(parts) if parts else 1
        return {name: self._parts.get(name, 1) for name in names}

    async def _partition_count(self, queue: str) -> int:
        parts = self._parts.get(queue)
        return parts if parts is not None else (await self._partitions([queue]))[queue]

    def _learn(self, info: QueueInfo | None) -> QueueInfo | None:
        if info is not None:
            self._parts[info.name] = info.settings.partitions
        return info

    async def _wake_first(self, queue: str, events: int) -> None:
        """On a Cluster: push wake-up tokens on the queue's first partition's `wake` list (which
        consumers block on) for messages a script made deliverable in another partition."""
        if events <= 0 or not self._cluster:
            return
        key = self._queue_keys(queue)[WAKE]
        with self._available():
            pipe = self.client.pipeline(transaction=False)
            pipe.lpush(key, *["1"] * min(events, WAKE_TOKENS))
            pipe.ltrim(key, 0, WAKE_TOKENS - 1)
            await pipe.execute()

    def _slot(self, queue: str) -> int:
        return key_slot(self._queue_keys(queue)[META].encode())

    async def _meta(self, names: Sequence[str], *fields: str) -> list[list[bytes | None]]:
        """Settings fields of several queues in one pipeline (split by node on a cluster)."""
        if not names:
            return []
        with self._available():
            pipe = self.client.pipeline(transaction=False)
            for name in names:
                pipe.hmget(self._queue_keys(name)[META], list(fields))
            return list(await pipe.execute())

    async def _require_queues(self, names: Sequence[str]) -> None:
        """Raise QueueNotFound for the first of `names` that does not exist."""
        for name, (created,) in zip(names, await self._meta(names, "created"), strict=True):
            if created is None:
                raise QueueNotFound(name)

    # -- queues ------------------------------------------------------------------------------

    async def create_queue(self, name: str, settings: QueueSettings, *, exist_ok: bool) -> QueueInfo:
        # the registry first: a name listed without its queue is skipped, never the other way round
        with self._available():
            await self.client.sadd(self._registry, name)  # type: ignore[misc]
        created, *fields = await self._run("create_queue", self._queue_keys(name), _settings_args(settings))
        if not created and not exist_ok:
            raise QueueAlreadyExists(name)
        info = self._learn(_queue_info(name, fields))
        assert info is not None
        # a partitioned queue's other partitions, each a copy of its settings (a create that
        # stopped half way is finished by the next one, or by a send that finds one missing)
        await self._create_partitions(info, range(1, info.settings.partitions))
        return info

    async def _create_partitions(self, info: QueueInfo, partitions: Sequence[int]) -> None:
        args = [*_settings_args(info.settings), _us(info.created_at), 1 if info.paused else 0]
        await asyncio.gather(
            *(self._run("create_queue", self._shard_keys(info.name, p), args) for p in partitions)
        )

    async def get_queue(self, name: str) -> QueueInfo | None:
        [fields] = await self._meta([name], *INFO_FIELDS)
        return self._learn(_queue_info(name, fields))

    async def update_queue(self, name: str, settings: QueueSettings) -> QueueInfo:
        args = _settings_args(settings)
        fields = await self._run("update_queue", self._queue_keys(name), args)
        info = self._learn(_queue_info(name, fields) if fields else None)
        if info is None:
            raise QueueNotFound(name)
        others = range(1, info.settings.partitions)
        updated = await asyncio.gather(
            *(self._run("update_queue", self._shard_keys(name, p), args) for p in others)
        )
        await self._create_partitions(info, [p for p, done in zip(others, updated, strict=True) if not done])
        return info

    async def delete_queue(self, name: str) -> bool:
        [(parts,)] = await self._meta([name], "parts")
        # the other partitions first: a delete that stops half way leaves the queue listed, to delete again
        others = range(1, int(parts) if parts else 1)
        await asyncio.gather(*(self._run("delete_queue", self._shard_keys(name, p), []) for p in others))
        existed = await self._run("delete_queue", self._queue_keys(name), [])
        await self._run("forget_queue", [self._registry, self._subscriptions], [name])
        self._forget(name)
        return bool(existed)

    async def _queue_names(self) -> list[str]:
        with self._available():
            members = await self.client.smembers(self._registry)  # type: ignore[misc]
        return sorted(_text(member) for member in members)

    async def list_queues(self) -> list[QueueInfo]:
        names = await self._queue_names()
        infos = [
            self._learn(_queue_info(name, fields))
            for name, fields in zip(names, await self._meta(names, *INFO_FIELDS), strict=True)
        ]
        return [info for info in infos if info is not None]

    async def set_paused(self, name: str, paused: bool) -> None:
        if not await self._run("set_paused", self._queue_keys(name), [1 if paused else 0]):
            raise QueueNotFound(name)
        # every partition's own flag: each partition's lease script reads only its own
        others = range(1, await self._partition_count(name))
        await asyncio.gather(
            *(self._run("set_paused", self._shard_keys(name, p), [1 if paused else 0]) for p in others)
        )

    # -- topic subscriptions ------------------------------------------------------------------

    async def add_subscription(self, topic: str, queue: str, types: Sequence[str] | None) -> Subscription:
        types_json = json.dumps(None if types is None else list(types))
        value = await self._run("add_subscription", [self._subscriptions], [f"{topic}\n{queue}", types_json])
        return _subscription(f"{topic}\n{queue}".encode(), value)

    async def remove_subscription(self, topic: str, queue: str) -> bool:
        with self._available():
            removed = await self.client.hdel(self._subscriptions, f"{topic}\n{queue}")  # type: ignore[misc]
        return bool(removed)

    async def list_subscriptions(self, topic: str | None = None) -> list[Subscription]:
        with self._available():
            entries = await self.client.hgetall(self._subscriptions)  # type: ignore[misc]
        subscriptions = [_subscription(field, value) for field, value in entries.items()]
        return sorted(
            (s for s in subscriptions if topic is None or s.topic == topic), key=lambda s: (s.topic, s.queue)
        )

    # -- worker heartbeats ---------------------------------------------------------------------

    async def record_worker(self, worker: WorkerInfo, ttl: float) -> None:
        with self._available():
            await self.client.hset(self._workers, worker.id, json.dumps(worker.to_dict()))  # type: ignore[misc]
            entries = await self.client.hgetall(self._workers)  # type: ignore[misc]
            old = [
                field
                for field, value in entries.items()
                if WorkerInfo.from_dict(json.loads(value)).seen_at < worker.seen_at - ttl
            ]
            if old:
                await self.client.hdel(self._workers, *old)  # type: ignore[misc]

    async def list_workers(self, since: float) -> list[WorkerInfo]:
        with self._available():
            entries = await self.client.hgetall(self._workers)  # type: ignore[misc]
        workers = [WorkerInfo.from_dict(json.loads(value)) for value in entries.values()]
        return sorted((worker for worker in workers if worker.seen_at >= since), key=lambda worker: worker.id)

    async def forget_worker(self, worker_id: str) -> None:
        with self._available():
            await self.client.hdel(self._workers, worker_id)  # type: ignore[misc]

    # -- sending -----------------------------------------------------------------------------

    async def send_many(self, messages: Sequence[OutgoingMessage]) -> list[str]:
        if len(messages) == 1 and await self._send_lone(messages[0]):
            return [messages[0].id]
        by_queue: dict[str, list[_Write]] = {}
        for message in messages:
            by_queue.setdefault(message.queue, []).append(_Write.of(message))
        held = await self._write(by_queue) if by_queue else {}
        if not held:
            return [message.id for message in messages]
        ids, seen = [], dict.fromkeys(by_queue, 0)
        for message in messages:
            ids.append(held.get((message.queue, seen[message.queue]), message.id))
            seen[message.queue] += 1
        return ids

    @staticmethod
    def _placed(write: _Write, partitions: int) -> int:
        return place(write.group, write.dedup_id, write.id, partitions) if partitions > 1 else 0

    async def _write(self, by_queue: dict[str, list[_Write]]) -> dict[tuple[str, int], str]:
        """Store the writes, each in its queue's partition (`place`). Returns the messages not
        stored for their dedup id, by (queue, index in its list): the id holding it."""
        for _ in range(PLACE_ATTEMPTS):
            parts = await self._partitions(list(by_queue))
            by_shard: dict[Shard, list[_Write]] = {}
            where: dict[Shard, list[int]] = {}
            for name, writes in by_queue.items():
                for index, write in enumerate(writes):
                    shard = (name, self._placed(write, parts[name]))
                    by_shard.setdefault(shard, []).append(write)
                    where.setdefault(shard, []).append(index)
            try:
                held = await self._send_shards(by_shard, parts)
            except _PlaceAgain:
                continue
            return {(shard[0], where[shard][index]): holder for (shard, index), holder in held.items()}
        raise RuntimeError(f"the partition counts of {sorted(by_queue)} kept changing during a send")

    async def _send_shards(
        self, by_shard: dict[Shard, list[_Write]], parts: dict[str, int]
    ) -> dict[tuple[Shard, int], str]:
        """One `send` script over every partition on a single server (all or none); on a Cluster,
        where a script reaches one slot, one script per partition at once: each is atomic, and a
        send that fails part way is repeated by the core with the same ids, which stores nothing
        twice. A send across queues on a Cluster first checks they all exist and have room."""
        queues = sorted({name for name, _ in by_shard})
        across = self._cluster and len(queues) > 1
        if across:
            await self._require_queues(queues)
        # backlog limits are the whole queue's: a partitioned queue's are summed here
        room = (
            set(queues) if across else {name for name in queues if parts[name] > 1 and name in self._bounded}
        )
        if room:
            await self._check_room(by_shard, parts, room)
        if len(by_shard) <= 1 or not self._cluster:
            held = await self._send_scripts(by_shard, parts, room)
        else:
            replies = await asyncio.gather(
                *(self._send_scripts({shard: writes}, parts, room) for shard, writes in by_shard.items()),
                return_exceptions=True,
            )
            failed = [reply for reply in replies if isinstance(reply, BaseException)]
            if failed:
                raise next((exc for exc in failed if isinstance(exc, _PlaceAgain)), failed[0])
            held = {
                key: holder for reply in replies if isinstance(reply, dict) for key, holder in reply.items()
            }
        if self._cluster:
            woken: dict[str, int] = {}
            for (name, partition), writes in by_shard.items():
                if partition > 0:
                    woken[name] = woken.get(name, 0) + len(writes)
            await asyncio.gather(*(self._wake_first(name, events) for name, events in woken.items()))
        return held

    async def _check_room(
        self, by_shard: dict[Shard, list[_Write]], parts: dict[str, int], names: set[str]
    ) -> None:
        """QueueFull unless the writes fit each of `names` as it is now, every partition summed:
        for a send whose scripts (each of which sees only its own partition) run apart. It counts
        every write, deduplicated or not (which is known only inside each script): a send it
        lets through can fail only in the scripts. Not atomic with them: sends racing each
        other may together pass a limit by what they add."""
        order = sorted(names)
        with self._available():
            pipe = self.client.pipeline(transaction=False)
            for name in order:
                pipe.hmget(self._queue_keys(name)[META], ["maxmsgs", "maxbytes"])
                for partition in range(parts[name]):
                    keys = self._shard_keys(name, partition)
                    pipe.hget(keys[META], "bytes")
                    pipe.zcard(keys[AGE])
            replies = list(await pipe.execute())
        at = 0
        for name in order:
            most_messages, most_bytes = replies[at]
            at += 1
            count = size = 0
            for _ in range(parts[name]):
                size += int(replies[at] or 0)
                count += int(replies[at + 1])
                at += 2
            settings = QueueSettings(
                max_backlog_messages=int(most_messages) if most_messages else None,
                max_backlog_bytes=int(most_bytes) if most_bytes else None,
            )
            writes = [write for (queue, _), shard in by_shard.items() if queue == name for write in shard]
            check_room(name, settings, (count, size), (len(writes), sum(len(write.body) for write in writes)))

    async def _send_scripts(
        self, by_shard: dict[Shard, list[_Write]], parts: dict[str, int], checked: set[str]
    ) -> dict[tuple[Shard, int], str]:
        """One `send` script over every partition in `by_shard` (they must share a node). Returns
        the messages not stored for their dedup id, by (partition, index in its list): the id
        holding it. Raises _PlaceAgain when the writes must be placed again."""
        shards = list(by_shard)
        keys: list[str] = []
        args: list[str | bytes | int] = []
        for name, partition in shards:
            keys.extend(self._shard_keys(name, partition))
            writes = by_shard[(name, partition)]
            args.extend((parts[name], 1 if name in checked else 0, len(writes)))
            for write in writes:
                args.extend(write.args())
            grouped = [(index, w.group) for index, w in enumerate(writes, 1) if w.group is not None]
            args.append(len(grouped))
            for index, group in grouped:
                args.extend((index, group))
            claims = [(index, w.dedup_id) for index, w in enumerate(writes, 1) if w.dedup_id is not None]
            args.append(len(claims))
            for index, dedup_id in claims:
                args.extend((index, dedup_id))
        line = self._send_line
        if line is None or line.busy:
            reply = await self._run("send", keys, args)
        else:
            with self._available():
                reply = await line.run(keys, args)
        return await self._held(reply, shards)

    async def _send_lone(self, message: OutgoingMessage) -> bool:
        """The common send on the kept line, with less work in the client: one message with
        neither group nor dedup id, to a queue of one partition seen before (the `send` script's
        own lean step then stores it). False when the send is not that case, or must be placed
        again (the general path then sends it)."""
        line = self._send_line
        if (
            line is None
            or line.busy
            or message.group is not None
            or message.dedup_id is not None
            or self._parts.get(message.queue) != 1
        ):
            return False
        write = _Write.of(message)
        packed = Packed(b"".join((LONE_FIRST.data, *map(bulk, write.args()), LONE_LAST.data)), LONE_COUNT)
        with self._available():
            reply = await line.run(self._queue_keys(message.queue), packed)
        if reply == [0]:  # stored (or was already): the common reply, with nothing to decode
            return True
        try:
            await self._held(reply, [(message.queue, 0)])
        except _PlaceAgain:
            return False
        return True

    async def _held(self, reply: Any, shards: Sequence[Shard]) -> dict[tuple[Shard, int], str]:
        """The `send` script's `reply` over `shards`: the messages not stored for their dedup id,
        by (partition, index in its list): the id holding it. Raises QueueFull, QueueNotFound,
        or _PlaceAgain when the writes must be placed again."""
        if reply[0] < 0:  # refused: nothing stored
            group, limit, held, adding, maximum = reply
            name, partition = shards[-group - 1]
            if limit == b"partitions":  # the queue was made again with another count
                self._parts[name] = int(held)
                raise _PlaceAgain
            if limit == b"unchecked":  # a partitioned queue with limits: sum them first
                self._bounded.add(name)
                raise _PlaceAgain
            raise QueueFull(name, _text(limit), int(held), int(adding), int(maximum))
        if reply[0]:
            name, partition = shards[reply[0] - 1]
            if partition > 0 and await self._heal(name):
                raise _PlaceAgain
            raise QueueNotFound(name)
        return {
            (shards[int(reply[i]) - 1], int(reply[i + 1]) - 1): _text(reply[i + 2])
            for i in range(1, len(reply), 3)
        }

    async def _heal(self, name: str) -> bool:
        """Whether `name` exists, its missing partitions made again (a create that stopped half
        way); it also learns the queue's partition count afresh."""
        info = await self.get_queue(name)
        if info is None:
            return False
        await self._create_partitions(info, range(1, info.settings.partitions))
        return True

    # -- shared rate limits (SharedRateLimits) ------------------------------------------------

    def _rate_key(self, queue: str) -> str:
        return f"{{{self.prefix}:{queue}}}:rate"  # the queue's hash tag: its slot

    async def take_tokens(self, queue: str, wanted: int, rate: float, burst: float) -> tuple[int, float]:
        taken, due = await self._run(
            "take_tokens", [self._rate_key(queue)], [wanted, repr(rate), repr(burst)]
        )
        return int(taken), float(due)

    async def give_back_tokens(self, queue: str, count: int, burst: float) -> None:
        await self._run("give_back_tokens", [self._rate_key(queue)], [count, repr(burst)])

    # -- leasing -----------------------------------------------------------------------------

    async def lease_many(
        self, queue: str, limit: int, visibility_timeout: float, *, handed: bool = True
    ) -> list[LeasedMessage]:
        if limit <= 0:
            return []
        token = new_token(handed)
        parts = await self._partition_count(queue)
        if parts > 1:
            return await self._lease_spread(queue, parts, limit, visibility_timeout, token)
        raw = await self._run("lease", self._queue_keys(queue), [limit, _us(visibility_timeout), token])
        return self._leased(queue, token, raw)

    async def _lease_spread(
        self, queue: str, parts: int, limit: int, visibility_timeout: float, token: str, hand_first: int = 0
    ) -> list[LeasedMessage]:
        """Lease from a partitioned queue's partitions at once, each asked for its share of
        `limit` (at most `limit` partitions a round), starting one partition further each time
        (from a random one in each process), so every partition is served. A partition that gave
        its whole share may hold more and is asked again for what is still wanted, after those
        not asked yet; it ends when `limit` is reached or every partition gave less than asked.
        A group lives in one partition, whose script keeps its head-only rule.

        `hand_first` (a lease ahead, `Backend.lease_ahead`): the first round's partitions each
        hand their share of it, by the lease script's rule; unless they all did (so the lease
        took at least that many non-suspects), the ones that did hand theirs back, and none is
        handed. The handed come first in the list."""
        start = self._rotation.get(queue)
        if start is None:
            start = random.randrange(parts)
        self._rotation[queue] = (start + 1) % parts
        waiting = [(start + i) % parts for i in range(parts)]
        timeout_us = _us(visibility_timeout)
        leased: list[LeasedMessage] = []
        hand, handing = hand_first, 0
        while len(leased) < limit and waiting:
            wanted = limit - len(leased)
            asked = waiting[:wanted]
            shares = [wanted // len(asked) + (1 if i < wanted % len(asked) else 0) for i in range(len(asked))]
            # at most each share (hand <= wanted), in the first round only
            hands = [hand // len(asked) + (1 if i < hand % len(asked) else 0) for i in range(len(asked))]
            hand = 0
            args: list[list[str | int]] = []
            for p, share, count in zip(asked, shares, hands, strict=True):
                part_token = _partition_token(token, p)
                args.append(
                    [share, timeout_us, part_token, count, handed_token(part_token)]
                    if count
                    else [share, timeout_us, part_token]
                )
            replies = await asyncio.gather(
                *(self._run("lease", self._shard_keys(queue, p), a) for p, a in zip(asked, args, strict=True))
            )
            again = []
            for p, share, count, raw in zip(asked, shares, hands, replies, strict=True):
                got = self._leased(queue, _partition_token(token, p), raw)
                # the script's rule, read back: its first `count` non-suspects, if it took that many
                fresh = [m for m in got if m.lost == 0]
                if count and len(fresh) >= count:
                    handed = handed_token(_partition_token(token, p))
                    for message in fresh[:count]:
                        message.lease_id = make_lease_id(message.id, handed)
                    handing += count
                leased.extend(got)
                if len(got) == share:
                    again.append(p)
            waiting = waiting[len(asked) :] + again
        if not handing:
            return leased
        handed_ones = [m for m in leased if not is_ahead(m.lease_id)]
        if handing < hand_first:  # a partition fell short: none is handed
            await self._per_partition("hand_back", queue, [_lease_of(m.lease_id) for m in handed_ones])
            for message in handed_ones:
                message_id, _, handed = message.lease_id.partition(".")
                message.lease_id = make_lease_id(message_id, AHEAD + handed[1:])
            return leased
        return handed_ones + [m for m in leased if is_ahead(m.lease_id)]

    async def lease_ahead(
        self, queue: str, limit: int, visibility_timeout: float, *, hand_first: int
    ) -> list[LeasedMessage]:
        if limit <= 0:
            return []
        token = new_token(handed=False)
        parts = await self._partition_count(queue)
        if parts > 1:
            return await self._lease_spread(queue, parts, limit, visibility_timeout, token, hand_first)
        args: list[str | int] = [limit, _us(visibility_timeout), token, hand_first, handed_token(token)]
        leased = self._leased(queue, token, await self._run("lease", self._queue_keys(queue), args))
        # the script's rule, read back: the first `hand_first` non-suspects, if it took that many
        fresh = [m for m in leased if m.lost == 0]
        if hand_first > 0 and len(fresh) >= hand_first:
            handed = handed_token(token)
            for message in fresh[:hand_first]:
                message.lease_id = make_lease_id(message.id, handed)
        return leased

    @staticmethod
    def _leased(queue: str, token: str, raw: list[Any]) -> list[LeasedMessage]:
        """LeasedMessages from the lease script's reply: id, record, attempts, lost and group per
        message."""
        leased = []
        for i in range(0, len(raw), 5):
            message_id = raw[i].decode()
            content_type, timestamp, dead, body = _record(raw[i + 1])
            dead_letter, headers = _details(dead)
            leased.append(
                LeasedMessage(
                    id=message_id,
                    queue=queue,
                    body=body,
                    content_type=content_type,
                    timestamp=timestamp / 1_000_000,
                    attempts=raw[i + 2],
                    lease_id=make_lease_id(message_id, token),
                    dead_letter=dead_letter,
                    lost=raw[i + 3],
                    headers=headers,
                    group=_text(raw[i + 4]) or None,
                )
            )
        return leased

    @staticmethod
    def _lease_pairs(leases: Sequence[Lease]) -> list[str]:
        """The (message id, token) of every lease, flat, as the scripts take them."""
        return [part for message_id, token, _ in leases for part in (message_id, token)]

    async def _split(self, queue: str, leases: Sequence[Lease]) -> list[tuple[int, list[int]]] | None:
        """The positions of `leases` by the partition their token names, for the partitions the
        queue has (a lease naming another is stale); None when all name partition 0, which
        needs no look at the queue (a queue of one partition: the common case)."""
        by_partition: dict[int, list[int]] = {}
        for position, (_, token, _) in enumerate(leases):
            by_partition.setdefault(_token_partition(token), []).append(position)
        if set(by_partition) <= {0}:
            return None
        parts = await self._partition_count(queue)
        return [(p, positions) for p, positions in by_partition.items() if p < parts]

    async def _per_partition(
        self, script: str, queue: str, leases: Sequence[Lease], first: Sequence[str | int] = ()
    ) -> list[tuple[int, list[int], Any]]:
        """`script` with `first`, then the (id, token) pairs of `leases`, run on each partition
        they name at once: (partition, positions, reply) per partition."""
        split = await self._split(queue, leases)
        if split is None:
            split = [(0, list(range(len(leases))))]
        replies = await asyncio.gather(
            *(
                self._run(
                    script, self._shard_keys(queue, p), [*first, *self._lease_pairs([leases[i] for i in at])]
                )
                for p, at in split
            )
        )
        return [(p, at, reply) for (p, at), reply in zip(split, replies, strict=True)]

    async def extend_leases(self, queue: str, leases: Sequence[Lease], visibility_timeout: float) -> int:
        if not leases:
            return 0
        done = await self._per_partition("extend_leases", queue, leases, [_us(visibility_timeout)])
        return sum(int(reply) for _, _, reply in done)

    async def begin(self, queue: str, leases: Sequence[Lease]) -> list[bool]:
        statuses = [False] * len(leases)
        if leases:
            for _, positions, reply in await self._per_partition("begin", queue, leases):
                for position, status in zip(positions, reply, strict=True):
                    statuses[position] = bool(status)
        return statuses

    async def release(self, queue: str, leases: Sequence[Lease]) -> int:
        if not leases:
            return 0
        done = await self._per_partition("release", queue, leases)
        await self._wake_first(queue, sum(int(reply) for p, _, reply in done if p > 0))
        return sum(int(reply) for _, _, reply in done)

    # -- settling ----------------------------------------------------------------------------

    async def settle(self, queue: str, outcomes: Outcomes) -> list[bool]:
        acks, retries = len(outcomes.acks), len(outcomes.retries)
        items = [
            *outcomes.acks,
            *(lease for lease, _ in outcomes.retries),
            *(m.lease for m in outcomes.dead_letters),
        ]
        split = await self._split(queue, items)
        if split is None:
            return await self._settle_partition(queue, 0, outcomes)
        # each partition's share, in the order acks, retries, dead letters (positions ascend)
        shares = [
            Outcomes(
                acks=[outcomes.acks[i] for i in at if i < acks],
                retries=[outcomes.retries[i - acks] for i in at if acks <= i < acks + retries],
                dead_letters=[outcomes.dead_letters[i - acks - retries] for i in at if i >= acks + retries],
            )
            for _, at in split
        ]
        replies = await asyncio.gather(
            *(self._settle_partition(queue, p, share) for (p, _), share in zip(split, shares, strict=True))
        )
        live = [False] * len(items)
        for (_, at), statuses in zip(split, replies, strict=True):
            for position, status in zip(at, statuses, strict=True):
                live[position] = status
        return live

    async def _settle_partition(self, queue: str, partition: int, outcomes: Outcomes) -> list[bool]:
        args: list[str | bytes | int] = [len(outcomes.acks)]
        for message_id, token, _ in outcomes.acks:
            args.extend((message_id, token))
        args.append(len(outcomes.retries))
        for (message_id, token, _), delay in outcomes.retries:
            args.extend((message_id, token, _us(delay)))

        # dead-letter queues: group 1 is this partition; queues of one partition on this node get
        # a group; others -1 (copied by the client: a partitioned one, its copies placed in
        # Python, or one in another Cluster slot)
        moves = outcomes.dead_letters
        targets = sorted({move.queue for move in moves if move.queue is not None})
        target_parts = await self._partitions(targets) if targets else {}
        groups = [queue]
        remote_queues: set[str] = set()
        remote_items: list[int] = []
        args.append(len(moves))
        for n, move in enumerate(moves):
            target = move.queue
            if target is None:
                group = 0
            elif target_parts[target] == 1 and target in groups:
                group = groups.index(target) + 1
            elif self._cluster or target_parts[target] > 1:
                group = -1
                remote_queues.add(target)
                remote_items.append(n)
            else:
                groups.append(target)
                group = len(groups)
            args.extend(
                (
                    move.lease[0],
                    move.lease[1],
                    move.new_id,
                    json.dumps(move.record.to_dict()),
                    group,
                    json.dumps(dead_letter_headers(move.record), ensure_ascii=False),
                )
            )
        if remote_queues:
            await self._require_queues(sorted(remote_queues))

        keys = [
            *self._shard_keys(queue, partition),
            *(k for name in groups[1:] for k in self._queue_keys(name)),
        ]
        missing, statuses, remote, *woken = await self._run("settle", keys, args)
        if missing:
            raise QueueNotFound(groups[missing - 1])
        live = [bool(status) for status in statuses]
        if partition > 0 and woken:
            await self._wake_first(queue, int(woken[0]))
        if remote:
            dead_start = len(outcomes.acks) + len(outcomes.retries)
            moving = [
                (dead_start + n, _Move(moves[n].queue or "", (moves[n].lease[0], moves[n].lease[1])))
                for n in remote_items
                if live[dead_start + n]
            ]
            for index in await self._dead_letter_across_slots((queue, partition), moving, remote):
                live[index] = False
        return live

    async def _dead_letter_across_slots(
        self, source: Shard, moving: list[tuple[int, _Move]], records: list[list[bytes]]
    ) -> list[int]:
        """Copy dead letters into queues on other slots (or partitioned ones), then delete the
        originals still held. Returns the items (settle positions) whose lease was lost meanwhile
        (their copies are removed again)."""
        by_queue: dict[str, list[_Write]] = {}
        copies: list[_Write] = []
        for (_, move), (new_id, body, content_type, dead_json, group) in zip(moving, records, strict=True):
            write = _Write(
                _text(new_id), _text(content_type), body, 0, _text(dead_json), group=_text(group) or None
            )
            by_queue.setdefault(move.destination, []).append(write)
            copies.append(write)
        await self._write(by_queue)
        pairs = [part for _, move in moving for part in move.held]
        finished = await self._run("finish_moves", self._shard_keys(*source), pairs)
        if source[1] > 0:  # a group's next message may be deliverable now
            await self._wake_first(source[0], sum(int(done) for done in finished))
        lost = [
            (index, move.destination, copy)
            for (index, move), copy, done in zip(moving, copies, finished, strict=True)
            if not done
        ]
        for _, destination, copy in lost:
            await self._discard(destination, [copy])
        return [index for index, _, _ in lost]

    async def _discard(self, queue: str, copies: Sequence[_Write]) -> None:
        """Delete copies again (their originals were taken back meanwhile), from their partitions."""
        parts = await self._partition_count(queue)
        by_partition: dict[int, list[str]] = {}
        for copy in copies:
            by_partition.setdefault(self._placed(copy, parts), []).append(copy.id)
        for partition, ids in by_partition.items():
            await self._run("discard", self._shard_keys(queue, partition), ids)
            if partition > 0:
                await self._wake_first(queue, len(ids))

    # -- inspection --------------------------------------------------------------------------

    async def _everywhere(self, script: str, queue: str, args: Sequence[str | int]) -> list[Any]:
        """`script` on every partition of `queue` at once: the replies, partition 0's first."""
        parts = await self._partition_count(queue)
        return list(
            await asyncio.gather(*(self._run(script, self._shard_keys(queue, p), args) for p in range(parts)))
        )

    async def stats(self, queue: str) -> QueueStats:
        replies = await self._everywhere("stats", queue, [])
        if not replies[0]:
            raise QueueNotFound(queue)
        paused = replies[0][0]
        size = backlog = delayed = leased = 0
        oldest_age = 0.0
        for raw in replies:
            if not raw:  # a partition not made yet (a create half way): it holds nothing
                continue
            _, held, ready, later, expired, live, oldest, now, held_ready, held_delayed = raw
            size += int(held)
            backlog += int(ready) + int(expired) + int(held_ready)
            delayed += int(later) + int(held_delayed)
            leased += int(live)
            if oldest:
                oldest_age = max(oldest_age, _seconds(now) - _seconds(oldest))
        return QueueStats(
            queue=queue,
            backlog=backlog,
            delayed=delayed,
            in_flight=leased,
            oldest_age_seconds=oldest_age,
            bytes=size,
            paused=paused == b"1",
        )

    async def peek(self, queue: str, limit: int) -> list[StoredMessage]:
        replies = await self._everywhere("peek", queue, [max(limit, 0)])
        if not replies[0]:
            raise QueueNotFound(queue)
        if limit <= 0:
            return []
        peeked = [message for raw in replies if raw for message in self._peeked(queue, raw)]
        if len(replies) > 1:  # the partitions' oldest first, merged (each partition's own order kept)
            peeked.sort(key=lambda m: (m.visible_at, m.timestamp))
        return peeked[:limit]

    @staticmethod
    def _peeked(queue: str, raw: list[Any]) -> list[StoredMessage]:
        peeked = []
        for i in range(1, len(raw), 6):
            message_id, rec, attempts, visible, leased, group = raw[i : i + 6]
            content_type, timestamp, dead, body = _record(rec)
            dead_letter, headers = _details(dead)
            peeked.append(
                StoredMessage(
                    id=_text(message_id),
                    queue=queue,
                    body=body,
                    content_type=content_type,
                    timestamp=_seconds(timestamp),
                    attempts=int(attempts),
                    visible_at=_seconds(visible),
                    leased=bool(leased),
                    dead_letter=dead_letter,
                    headers=headers,
                    group=_text(group) or None,
                )
            )
        return peeked

    # -- bulk maintenance --------------------------------------------------------------------

    async def purge(self, queue: str) -> int:
        counts = [int(count) for count in await self._everywhere("purge", queue, [])]
        if counts[0] < 0:
            raise QueueNotFound(queue)
        return sum(count for count in counts if count > 0)

    async def delete_message(self, queue: str, message_id: str) -> bool:
        """On a partitioned queue every partition is asked at once: the message's partition
        follows from its group or dedup id, which a delete by id does not know (a rare admin
        operation; acks and renewals find theirs in the lease token)."""
        statuses = [int(status) for status in await self._everywhere("delete_message", queue, [message_id])]
        if statuses[0] < 0:
            raise QueueNotFound(queue)
        if 2 in statuses:
            raise MessageLeased(queue, message_id)
        if 1 in statuses[1:]:  # its group's next message may be deliverable now
            await self._wake_first(queue, 1)
        return 1 in statuses

    async def move_messages(self, source: str, destination: str, limit: int | None) -> int:
        await self._require_queues([source, destination])
        parts = await self._partitions([source, destination])
        if limit is None:
            # everything there now (a bound, so a move into the same queue ends)
            with self._available():
                pipe = self.client.pipeline(transaction=False)
                for partition in range(parts[source]):
                    keys = self._shard_keys(source, partition)
                    for key in (keys[READY], keys[INFLIGHT], keys[HELD]):
                        pipe.zcard(key)
                limit = sum(int(size) for size in await pipe.execute())
        # a partitioned side: the messages are placed in Python, so copied as across slots
        placed = parts[source] > 1 or parts[destination] > 1
        across = placed or (self._cluster and self._slot(source) != self._slot(destination))
        moved = 0
        for partition in range(parts[source]):
            while moved < limit:
                chunk = min(CHUNK, limit - moved)
                if across:
                    count = await self._move_across_slots((source, partition), destination, chunk)
                else:
                    count = await self._move_chunk(source, destination, chunk)
                moved += count
                if count < chunk:
                    break
        return moved

    async def _move_chunk(self, source: str, destination: str, limit: int) -> int:
        keys = self._queue_keys(source) + self._queue_keys(destination)
        count = int(await self._run("move", keys, [limit]))
        if count < 0:
            raise QueueNotFound(source if count == -1 else destination)
        return count

    async def _move_across_slots(self, source: Shard, destination: str, limit: int) -> int:
        token = f"move-{new_token()}"
        source_keys = self._shard_keys(*source)
        raw = await self._run("claim_for_move", source_keys, [limit, _us(MOVE_HOLD_SECONDS), token])
        if raw == [-1]:
            if source[1] > 0:  # a partition not made yet holds nothing
                return 0
            raise QueueNotFound(source[0])
        writes = []
        for i in range(0, len(raw), 3):
            content_type, timestamp, details, body = _record(raw[i + 1])
            group = _text(raw[i + 2]) or None
            writes.append(
                _Write(_text(raw[i]), content_type, body, 0, _headers_only(details), timestamp, group=group)
            )
        if not writes:
            return 0
        await self._write({destination: writes})  # copy first: idempotent by id
        finished = await self._run("finish_moves", source_keys, [p for w in writes for p in (w.id, token)])
        lost = [write for write, done in zip(writes, finished, strict=True) if not done]
        if lost:  # taken back in the source meanwhile: undo their copies
            await self._discard(destination, lost)
        return len(writes) - len(lost)

    async def sweep(self) -> int:
        removed = 0
        names = await self._queue_names()
        parts = await self._partitions(names)
        for name in names:
            for partition in range(parts[name]):
                keys = self._shard_keys(name, partition)
                while True:
                    count = int(await self._run("sweep", keys, [CHUNK]))
                    removed += count
                    if partition > 0:  # its groups' next messages may be deliverable now
                        await self._wake_first(name, count)
                    if count < CHUNK:
                        break
        return removed

    # -- wake-ups ----------------------------------------------------------------------------

    async def wait_for_messages(self, queue: str, timeout: float) -> None:
        block = await self._block_seconds(queue, timeout)
        if block is not None:
            with self._available():
                await self.client.blpop([self._queue_keys(queue)[WAKE]], timeout=block)  # type: ignore[misc]

    async def wait_and_lease(
        self, queue: str, limit: int, visibility_timeout: float, timeout: float, *, handed: bool = True
    ) -> list[LeasedMessage]:
        """The lease script is pipelined behind the blocking pop: Redis runs it the moment the
        pop returns, so a wake-up costs no round trip of its own. (On a Cluster, where a pipeline
        is split by node, and for a partitioned queue, the two go one after the other.)"""
        client = self.client
        if not isinstance(client, aioredis.Redis) or limit <= 0 or self._parts.get(queue, 1) > 1:
            return await super().wait_and_lease(queue, limit, visibility_timeout, timeout, handed=handed)
        block = await self._block_seconds(queue, timeout)
        if block is None:
            return await self.lease_many(queue, limit, visibility_timeout, handed=handed)
        if self._parts.get(queue, 1) > 1:  # made again, partitioned, since this process last looked
            return await super().wait_and_lease(queue, limit, visibility_timeout, timeout, handed=handed)
        keys = self._queue_keys(queue)
        token = new_token(handed)
        lease = self._scripts["lease"]
        with self._available():
            # EVALSHA itself: a pipeline given the script object would first ask SCRIPT EXISTS
            async with client.pipeline(transaction=False) as pipe:
                pipe.blpop([keys[WAKE]], timeout=block)
                pipe.evalsha(lease.sha, len(keys), *keys, str(limit), str(_us(visibility_timeout)), token)
                _, raw = await pipe.execute(raise_on_error=False)
        if isinstance(raw, redis_errors.NoScriptError):  # a restarted server: lease_many loads it
            return await self.lease_many(queue, limit, visibility_timeout, handed=handed)
        if isinstance(raw, Exception):
            raise raw
        return self._leased(queue, token, raw)

    async def _block_seconds(self, queue: str, timeout: float) -> float | None:
        """How long to block for a wake-up: at most until the queue's next delayed message or
        lease deadline (in any partition). None when not worth a blocking pop (it sleeps through
        a short wait). It reads the queue's partition count afresh (a queue deleted and made
        again may have another), in the same round trip."""
        parts = self._parts.get(queue, 1)
        meta = self._queue_keys(queue)[META]
        read: Awaitable[bytes | None] = self.client.hget(meta, "parts")  # type: ignore[assignment]
        with self._available():
            count, *dues = await asyncio.gather(
                read, *(self._run("wake_delay", self._shard_keys(queue, p), []) for p in range(parts))
            )
        if count is not None:
            self._parts[queue] = int(count) if count else 1
        due_us = min((int(due) for due in dues if int(due) >= 0), default=-1)
        if due_us >= 0:
            timeout = min(timeout, _seconds(due_us))
        if timeout < MIN_BLOCK_SECONDS:
            if timeout > 0:
                await asyncio.sleep(timeout)
            return None
        return min(timeout, MAX_BLOCK_SECONDS)


def _subscription(field: bytes, value: bytes) -> Subscription:
    topic, _, queue = _text(field).rpartition("\n")
    created, _, types_json = _text(value).partition("|")
    types = json.loads(types_json)
    return Subscription(
        topic=topic,
        queue=queue,
        types=None if types is None else tuple(types),
        created_at=_seconds(int(created)),
    )
