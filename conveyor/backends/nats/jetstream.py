"""Everything the NATS engine asks of JetStream, in one place: URL, names, and a dozen calls.

Each queue is one stream, `<prefix>_q_<queue>`, over the subjects `<prefix>.q.<queue>.>`:
`.log` holds the queue's records, `.meta` its settings, `.snap` the parts of its snapshots.
A queue of N > 1 partitions has N logs: partition 0 is that stream, partition k >= 1 the stream
`<prefix>_p<k>_<queue>` over `<prefix>.p.<queue>.<k>.>` (the same three subjects). The calls
below take a *log name*: the queue's name for partition 0, `<queue>.<k>` for partition k (a queue
name never holds a dot), so everything that reads or writes one log works on any partition.
Topic subscriptions are one JSON document, the last record of the stream `<prefix>_topics`,
replaced by compare-and-set.

Failures: a call that times out or meets a stream without a leader (an election after a node was
lost) is retried for up to RETRY_SECONDS, then raises BackendUnavailable. Retrying a publish is
safe: every record carries a Nats-Msg-Id, so the stream stores it once within its duplicate window.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import parse_qsl, unquote

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy

from conveyor.backends import redact
from conveyor.backends.nats import connecting
from conveyor.backends.nats.records import RECORD_FORMAT
from conveyor.errors import BackendUnavailable, CannotConnect, InvalidURL, QueueNotFound

T = TypeVar("T")
log = logging.getLogger("conveyor.nats")

DEFAULT_PREFIX = "conveyor"
DEFAULT_PORT = 4222
PREFIX_PATTERN = re.compile(r"[A-Za-z0-9-]{1,32}")  # no "_": it separates prefix and queue in names
#: Streams are replicated on this many servers unless the URL says `replicas=` (1 to 5).
DEFAULT_REPLICAS = 1
MAX_REPLICAS = 5
#: How long a stream remembers a record's Nats-Msg-Id to drop a repeat (URL `duplicate_window=`).
DEFAULT_DUPLICATE_WINDOW_SECONDS = 120.0
MAX_DUPLICATE_WINDOW_SECONDS = 86_400.0
#: The first connect tries each server this many times more before BackendUnavailable.
CONNECT_ATTEMPTS = 2
#: One JetStream request waits this long for its reply before it is tried again.
REQUEST_TIMEOUT_SECONDS = 1.0
#: Transient failures (timeouts, no stream leader, reconnecting) are retried this long in all.
RETRY_SECONDS = 15.0
#: A log reader that hears nothing (not even a heartbeat) for two of these starts again.
HEARTBEAT_SECONDS = 1.0
#: JetStream error codes the engine tells apart.
STREAM_NOT_FOUND = 10059
MESSAGE_NOT_FOUND = 10037
STREAM_NAME_IN_USE = 10058
WRONG_LAST_SEQUENCE = 10071
URL_OPTIONS = ("prefix", "replicas", "duplicate_window", "record_format")

_TRANSIENT = (
    nats.errors.TimeoutError,
    nats.errors.NoRespondersError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.StaleConnectionError,
    nats.js.errors.ServiceUnavailableError,
    asyncio.TimeoutError,
)


def raise_if_cancelled() -> None:
    """Re-raise a cancellation that a timeout swallowed: nats-py (issue #373) and asyncio.wait_for
    on 3.11 can turn a task's cancel into a TimeoutError, and a retry loop would then go on."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


class WrongLastSequence(Exception):
    """A compare-and-set publish lost to another writer."""


@dataclass(frozen=True)
class NatsURL:
    servers: list[str]
    user: str | None
    password: str | None
    token: str | None
    prefix: str
    replicas: int
    duplicate_window: float
    where: str  # the servers, without credentials, for messages
    #: the newest record format this process writes (a rolling upgrade pins the one before)
    record_format: int = RECORD_FORMAT


def parse_nats_url(url: str) -> NatsURL:
    """`nats://[user:password@|token@]host[:port][,host2[:port]...][?prefix=&replicas=&duplicate_window=&record_format=]`"""
    shown = redact(url)
    scheme, _, rest = url.partition("://")
    if scheme.lower() != "nats" or not rest:
        raise InvalidURL(f"invalid NATS URL {shown!r}: expected nats://host:4222[,host2:4222]")
    location, _, query = rest.partition("?")
    location = location.rstrip("/")
    credentials, at, hosts = location.rpartition("@")
    user = password = token = None
    if at:
        name, colon, secret = credentials.partition(":")
        if colon:
            user, password = unquote(name), unquote(secret)
        else:
            token = unquote(name)
    servers = []
    for host in hosts.split(","):
        name, colon, port = host.strip().rpartition(":") if ":" in host else (host.strip(), "", "")
        if not name or (colon and not port.isdigit()):
            raise InvalidURL(f"invalid server {host!r} in {shown!r}: expected host or host:port")
        servers.append(f"nats://{name}:{port or DEFAULT_PORT}")
    options = dict(parse_qsl(query, keep_blank_values=True))
    unknown = sorted(set(options) - set(URL_OPTIONS))
    if unknown:
        raise InvalidURL(
            f"unknown option(s) {', '.join(unknown)} in {shown!r}; known: {', '.join(URL_OPTIONS)}"
        )
    prefix = options.get("prefix", DEFAULT_PREFIX)
    if PREFIX_PATTERN.fullmatch(prefix) is None:
        raise InvalidURL(
            f"invalid prefix {prefix!r} in {shown!r}: use 1 to 32 characters of A-Z, a-z, 0-9, -"
        )
    replicas = _number(options, "replicas", DEFAULT_REPLICAS, 1, MAX_REPLICAS, shown)
    window = _number(
        options, "duplicate_window", DEFAULT_DUPLICATE_WINDOW_SECONDS, 1, MAX_DUPLICATE_WINDOW_SECONDS, shown
    )
    record_format = _number(options, "record_format", RECORD_FORMAT, 1, RECORD_FORMAT, shown)
    where = ",".join(server.removeprefix("nats://") for server in servers)
    return NatsURL(
        servers, user, password, token, prefix, int(replicas), float(window), where, int(record_format)
    )


def _number(options: dict[str, str], name: str, default: float, low: float, high: float, url: str) -> float:
    text = options.get(name)
    if text is None:
        return default
    try:
        value = float(text)
    except ValueError:
        raise InvalidURL(f"{name} must be a number in {url!r}, got {text!r}") from None
    if not low <= value <= high or (name in ("replicas", "record_format") and value != int(value)):
        raise InvalidURL(f"{name} must be between {low:g} and {high:g} in {url!r}, got {text!r}")
    return value


@dataclass(frozen=True, slots=True)
class StreamState:
    created: str  # tells a queue deleted and made again from the one a reader knew
    first_seq: int
    last_seq: int
    #: consumers on the stream: the engine makes none but its readers' (one per reading process)
    readers: int = 0

    @classmethod
    def of(cls, info: dict[str, Any]) -> StreamState:
        """From a JetStream stream info."""
        state = info["state"]
        return cls(
            str(info["created"]),
            int(state["first_seq"]),
            int(state["last_seq"]),
            int(state.get("consumer_count", 0)),
        )


#: separates a queue's name and a partition in a log name (a queue name never holds one)
PARTITION_MARK = "."


def log_name(queue: str, partition: int) -> str:
    """The name of partition `partition`'s log of `queue`: the queue's own name for partition 0."""
    return queue if partition == 0 else f"{queue}{PARTITION_MARK}{partition}"


def split_log(log: str) -> tuple[str, int]:
    """(queue, partition) of a log name."""
    queue, mark, partition = log.partition(PARTITION_MARK)
    return queue, int(partition) if mark else 0


def created_ns(created: str) -> int:
    """A stream's creation time (RFC 3339 with up to nanoseconds, as the server writes it) in
    nanoseconds since the epoch, to tell which of two streams is older."""
    text = created.strip().replace("Z", "+00:00")
    fraction = ""
    if "." in text:
        head, _, tail = text.partition(".")
        digits = len(tail) - len(tail.lstrip("0123456789"))
        fraction, text = tail[:digits], head + tail[digits:]
    seconds = dt.datetime.fromisoformat(text).timestamp()
    return int(seconds) * 1_000_000_000 + int((fraction + "000000000")[:9])


def _error_code(exc: BaseException) -> int | None:
    return getattr(exc, "err_code", None)


def _acked_seq(data: bytes) -> int:
    """The stream sequence a PubAck names; its error as nats-py's APIError (subclass by code)."""
    ack = json.loads(data)
    error = ack.get("error")
    if error is not None:
        nats.js.errors.APIError.from_error(error)  # raises
    return int(ack["seq"])


class JetStream:
    """One NATS connection and the JetStream calls the engine makes through it."""

    def __init__(self, options: NatsURL) -> None:
        self.options = options
        prefix = options.prefix
        self._prefix = prefix
        self._stream_prefix = f"{prefix}_q_"
        self._subject_prefix = f"{prefix}.q."
        self._partition_subjects = f"{prefix}.p."
        self.topics_stream = f"{prefix}_topics"
        self.topics_subject = f"{prefix}.topics"
        # worker heartbeats: in memory, as the rate buckets below (refreshed every few seconds)
        self.workers_stream = f"{prefix}_heartbeats"
        self.workers_subject = f"{prefix}.heartbeats"
        # shared rate limits: one subject per queue holding its token bucket's last state, in
        # memory (a bucket refills by itself after a server restart). Not `_rates` on file as
        # before: nats-server 2.9.10 crashed (a nil pointer in jsMsgGetRequest) when workers read
        # and replaced a bucket on file storage at full speed; its memory store reads under a lock.
        self.rates_stream = f"{prefix}_buckets"
        self._rates_subject_prefix = f"{prefix}.buckets."
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._subject_cache: dict[tuple[str, str], str] = {}

    # -- names -------------------------------------------------------------------------------

    def stream(self, log: str) -> str:
        queue, partition = split_log(log)
        if partition == 0:
            return self._stream_prefix + queue
        return f"{self._prefix}_p{partition}_{queue}"

    def subjects(self, log: str) -> str:
        """Every subject of a log's stream (a wildcard)."""
        queue, partition = split_log(log)
        if partition == 0:
            return f"{self._subject_prefix}{queue}.>"
        return f"{self._partition_subjects}{queue}.{partition}.>"

    def subject(self, log: str, kind: str) -> str:
        subject = self._subject_cache.get((log, kind))
        if subject is None:  # every send names one: made once per log
            subject = self._subject_cache[log, kind] = self.subjects(log)[:-1] + kind
        return subject

    def queue_of(self, stream: str) -> str | None:
        return stream[len(self._stream_prefix) :] if stream.startswith(self._stream_prefix) else None

    def log_of(self, stream: str) -> str | None:
        """The log a stream holds (a queue's, or one of its partitions'); None for another stream."""
        queue = self.queue_of(stream)
        if queue is not None:
            return queue
        head, _, queue = stream.partition("_")
        kind, _, queue = queue.partition("_")
        if head != self._prefix or not queue or kind[:1] != "p" or not kind[1:].isdigit():
            return None
        return log_name(queue, int(kind[1:]))

    # -- connection --------------------------------------------------------------------------

    async def connect(self) -> None:
        if self._nc is not None:
            return
        first_errors: list[Exception] = []  # until connected: what made the first connect fail

        async def quiet(exc: Exception) -> None:
            """nats-py reports reconnects and readers started again here; calls that fail say so."""
            if self._nc is None and len(first_errors) < CONNECT_ATTEMPTS * 2:
                first_errors.append(exc)
            log.debug("nats-py: %r", exc)

        try:
            nc = await self._first_connect(quiet)
        except BackendUnavailable:
            lasting = [exc for exc in first_errors if connecting.cannot_heal(exc)]
            if lasting:
                where = self.options.where
                raise CannotConnect(
                    f"cannot connect to NATS at {where}: {connecting.cause(lasting[-1])}"
                ) from None
            raise
        # connected once: from now on reconnect for as long as it takes (nats-py would also
        # retry the first connect forever with -1, so it is set only now)
        nc.options["max_reconnect_attempts"] = -1
        self._nc = nc
        self._js = nc.jetstream(timeout=REQUEST_TIMEOUT_SECONDS)

    async def _first_connect(self, error_cb: Callable[[Exception], Awaitable[None]]) -> Client:
        options = self.options
        with self.available():
            return await nats.connect(
                servers=options.servers,
                user=options.user,
                password=options.password,
                token=options.token,
                connect_timeout=5,
                reconnect_time_wait=0.25,
                max_reconnect_attempts=CONNECT_ATTEMPTS,
                allow_reconnect=True,
                ping_interval=5,
                max_outstanding_pings=2,
                error_cb=error_cb,
            )

    async def close(self) -> None:
        nc, self._nc, self._js = self._nc, None, None
        if nc is not None:
            with contextlib.suppress(Exception):
                await nc.close()

    @property
    def nc(self) -> Client:
        if self._nc is None:
            raise RuntimeError("the NATS backend is not connected")
        return self._nc

    @property
    def js(self) -> JetStreamContext:
        if self._js is None:
            raise RuntimeError("the NATS backend is not connected")
        return self._js

    @property
    def max_payload(self) -> int:
        return self.nc.max_payload

    @contextlib.contextmanager
    def available(self) -> Iterator[None]:
        try:
            yield
        except (*_TRANSIENT, nats.errors.ConnectionClosedError, nats.errors.NoServersError, OSError) as exc:
            raise_if_cancelled()
            raise BackendUnavailable(f"NATS at {self.options.where} is unavailable: {exc!r}") from exc

    async def _retrying(self, call: Callable[[], Awaitable[T]]) -> T:
        """`call` until it succeeds, retrying transient failures for up to RETRY_SECONDS."""
        deadline = time.monotonic() + RETRY_SECONDS
        pause = 0.05
        while True:
            try:
                result = await call()
                raise_if_cancelled()  # a reply that came as the task was cancelled wins on 3.11
                return result
            except _TRANSIENT as exc:
                raise_if_cancelled()
                if time.monotonic() + pause > deadline:
                    raise BackendUnavailable(f"NATS at {self.options.where} is unavailable: {exc!r}") from exc
            except (nats.errors.ConnectionClosedError, nats.errors.NoServersError) as exc:
                raise BackendUnavailable(f"NATS at {self.options.where} is unavailable: {exc!r}") from exc
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.25)

    async def api(self, subject: str, request: dict[str, Any] | None = None) -> dict[str, Any]:
        """One JetStream API request ($JS.API.<subject>); an error reply raises APIError."""
        payload = b"" if request is None else json.dumps(request).encode()

        async def call() -> dict[str, Any]:
            reply = await self.nc.request(f"$JS.API.{subject}", payload, timeout=REQUEST_TIMEOUT_SECONDS)
            response: dict[str, Any] = json.loads(reply.data)
            error = response.get("error")
            if error is not None:
                raised = nats.js.errors.APIError.from_error(error)
                if raised is not None:
                    raise raised
            return response

        return await self._retrying(call)

    # -- streams -----------------------------------------------------------------------------

    async def create_stream(self, log: str) -> StreamState:
        """Idempotent: a stream that already exists (with any configuration) is left as it is.
        Returns the stream's state (its creation time tells a stream made now from an older one)."""
        config = {
            "name": self.stream(log),
            "subjects": [self.subjects(log)],
            "retention": "limits",
            "storage": "file",
            "discard": "old",
            "num_replicas": self.options.replicas,
            "duplicate_window": int(self.options.duplicate_window * 1_000_000_000),
            "allow_direct": True,
        }
        try:
            return StreamState.of(await self.api(f"STREAM.CREATE.{self.stream(log)}", config))
        except nats.js.errors.APIError as exc:
            if _error_code(exc) != STREAM_NAME_IN_USE:
                raise
        return await self.require_stream(log)  # made with another configuration: as it is

    async def delete_stream(self, log: str) -> bool:
        try:
            await self.api(f"STREAM.DELETE.{self.stream(log)}")
        except nats.js.errors.APIError as exc:
            if _error_code(exc) == STREAM_NOT_FOUND:
                return False
            raise
        return True

    async def stream_state(self, log: str) -> StreamState | None:
        try:
            info = await self.api(f"STREAM.INFO.{self.stream(log)}")
        except nats.js.errors.APIError as exc:
            if _error_code(exc) == STREAM_NOT_FOUND:
                return None
            raise
        return StreamState.of(info)

    async def require_stream(self, log: str) -> StreamState:
        state = await self.stream_state(log)
        if state is None:
            raise QueueNotFound(split_log(log)[0])
        return state

    async def _stream_names(self, subject: str) -> list[str]:
        names: list[str] = []
        while True:
            page = await self.api("STREAM.NAMES", {"offset": len(names), "subject": subject})
            streams = page.get("streams") or []
            names.extend(streams)
            if not streams or len(names) >= int(page.get("total", 0)):
                return names

    async def queue_names(self) -> list[str]:
        names = await self._stream_names(f"{self._subject_prefix}>")
        return sorted(queue for name in names if (queue := self.queue_of(name)) is not None)

    async def partition_logs(self, queue: str) -> list[str]:
        """The logs of `queue`'s partitions 1 and up that have a stream (whatever its count says)."""
        names = await self._stream_names(f"{self._partition_subjects}{queue}.>")
        logs = (self.log_of(name) for name in names)
        return sorted(log for log in logs if log is not None and split_log(log)[0] == queue)

    async def queue_streams(self) -> dict[str, StreamState]:
        """Every log's stream state (queues' and their partitions'), by log name, a page of up
        to 256 streams per request."""
        streams: dict[str, StreamState] = {}
        offset = 0
        while True:
            # `<prefix>.*.>` holds the queues' (.q.) and partitions' (.p.) subjects, and the
            # rates stream's, whose name log_of leaves out
            page = await self.api("STREAM.LIST", {"offset": offset, "subject": f"{self._prefix}.*.>"})
            infos = page.get("streams") or []
            for info in infos:
                log = self.log_of(str(info["config"]["name"]))
                if log is not None:
                    streams[log] = StreamState.of(info)
            offset += len(infos)
            if not infos or offset >= int(page.get("total", 0)):
                return streams

    async def record(self, log: str, seq: int) -> bytes | None:
        """The payload of record `seq` (None when it is gone): a direct get, which any replica
        answers; one that has not stored it yet answers 404, so the stream leader is asked then.

        A stream of one replica has no other copy: its 404 is final. Not asking again also keeps
        clear of nats-server 2.9.10's crash (a nil pointer in jsMsgGetRequest) when a STREAM.MSG.GET
        by sequence meets the record's removal."""
        stream = self.stream(log)
        request = json.dumps({"seq": seq}).encode()

        with contextlib.suppress(*_TRANSIENT):  # then the leader, which the API call retries
            # (the suppress must not eat a cancel that nats-py turned into a timeout)
            reply = await self.nc.request(
                f"$JS.API.DIRECT.GET.{stream}", request, timeout=REQUEST_TIMEOUT_SECONDS
            )
            raise_if_cancelled()
            status = (reply.headers or {}).get("Status")
            if status is None:
                return reply.data
            if status == "404" and self.options.replicas == 1:
                return None
        try:
            message = await self.api(f"STREAM.MSG.GET.{stream}", {"seq": seq})
        except nats.js.errors.APIError as exc:
            code = _error_code(exc)
            if code == MESSAGE_NOT_FOUND:
                return None
            if code == STREAM_NOT_FOUND:
                raise QueueNotFound(split_log(log)[0]) from exc
            raise
        return base64.b64decode(message["message"].get("data") or b"")

    async def delete_consumer(self, log: str, consumer: str) -> None:
        """Tried once (a reader closing does not wait for a server that is away; the server
        drops an idle consumer by itself after a minute)."""
        subject = f"$JS.API.CONSUMER.DELETE.{self.stream(log)}.{consumer}"
        await self.nc.request(subject, b"", timeout=REQUEST_TIMEOUT_SECONDS)

    async def purge_below(self, log: str, seq: int) -> None:
        await self.api(f"STREAM.PURGE.{self.stream(log)}", {"seq": seq})

    async def last_on(self, log: str, kind: str) -> tuple[int, bytes] | None:
        """The sequence and data of the last record on `kind`; None when there is none.
        QueueNotFound when the stream does not exist."""
        try:
            reply = await self.api(
                f"STREAM.MSG.GET.{self.stream(log)}", {"last_by_subj": self.subject(log, kind)}
            )
        except nats.js.errors.APIError as exc:
            code = _error_code(exc)
            if code == STREAM_NOT_FOUND:
                raise QueueNotFound(split_log(log)[0]) from exc
            if code == MESSAGE_NOT_FOUND:
                return None
            raise
        message = reply["message"]
        return int(message["seq"]), base64.b64decode(message.get("data") or b"")

    # -- records -----------------------------------------------------------------------------

    async def publish(
        self,
        log: str,
        kind: str,
        payload: bytes,
        msg_id: str,
        *,
        expected_last_subject_seq: int | None = None,
    ) -> int:
        """Store one record; returns its stream sequence. QueueNotFound when the stream does not
        exist, WrongLastSequence when `expected_last_subject_seq` no longer holds."""
        headers = {"Nats-Msg-Id": msg_id}
        if expected_last_subject_seq is not None:
            headers["Nats-Expected-Last-Subject-Sequence"] = str(expected_last_subject_seq)
        subject = self.subject(log, kind)

        async def call() -> int:
            # the request JetStreamContext.publish makes, its PubAck read for the sequence alone
            try:
                reply = await self.nc.request(
                    subject, payload, timeout=REQUEST_TIMEOUT_SECONDS, headers=headers
                )
            except nats.errors.NoRespondersError:
                # nothing listens on the subject: no such stream, or (rarely) a moment when no
                # server has it; ask, and try again in the second case
                if await self.stream_state(log) is None:
                    raise QueueNotFound(split_log(log)[0]) from None
                raise
            try:
                return _acked_seq(reply.data)
            except nats.js.errors.APIError as exc:
                if _error_code(exc) == WRONG_LAST_SEQUENCE:
                    raise WrongLastSequence(str(exc)) from exc
                if exc.code == 503:
                    raise nats.js.errors.ServiceUnavailableError from exc
                raise

        return await self._retrying(call)

    async def follow(
        self, log: str, on_record: Callable[[Msg], Awaitable[None]]
    ) -> JetStreamContext.PushSubscription:
        """Read the log's stream from its first record on, in order, then every new record as
        it is stored (an ordered push consumer: ephemeral, in memory, started again by the
        client from where it was if it goes quiet)."""
        config = ConsumerConfig(deliver_policy=DeliverPolicy.ALL, inactive_threshold=60.0)
        with self.available():
            return await self.js.subscribe(
                self.subjects(log),
                stream=self.stream(log),
                cb=on_record,
                ordered_consumer=True,
                idle_heartbeat=HEARTBEAT_SECONDS,
                config=config,
            )

    # -- topic subscriptions -----------------------------------------------------------------

    async def read_topics(self) -> tuple[int, bytes | None]:
        """The subscriptions document and its sequence (0 and None before the first one)."""
        return await self._read_last(self.topics_stream, self.topics_subject)

    async def read_workers(self) -> tuple[int, bytes | None]:
        """The worker heartbeats document and its sequence (0 and None before the first one)."""
        return await self._read_last(self.workers_stream, self.workers_subject)

    async def write_workers(self, document: bytes, expected_seq: int) -> None:
        """Replace the worker heartbeats document if it is still at `expected_seq`, else raise
        WrongLastSequence."""
        await self._replace_last(
            self.workers_subject,
            document,
            expected_seq,
            (self.workers_stream, self.workers_subject),
            storage="memory",
        )

    async def _read_last(self, stream: str, subject: str) -> tuple[int, bytes | None]:
        try:
            reply = await self.api(f"STREAM.MSG.GET.{stream}", {"last_by_subj": subject})
        except nats.js.errors.APIError as exc:
            if _error_code(exc) in (STREAM_NOT_FOUND, MESSAGE_NOT_FOUND):
                return 0, None
            raise
        message = reply["message"]
        return int(message["seq"]), base64.b64decode(message.get("data") or b"")

    async def read_rate(self, queue: str) -> tuple[int, bytes | None]:
        """A shared rate limit's bucket and its sequence (0 and None before the first take)."""
        try:
            reply = await self.api(
                f"STREAM.MSG.GET.{self.rates_stream}", {"last_by_subj": self._rates_subject_prefix + queue}
            )
        except nats.js.errors.APIError as exc:
            if _error_code(exc) in (STREAM_NOT_FOUND, MESSAGE_NOT_FOUND):
                return 0, None
            raise
        message = reply["message"]
        return int(message["seq"]), base64.b64decode(message.get("data") or b"")

    async def write_rate(self, queue: str, state: bytes, expected_seq: int) -> None:
        """Replace a rate limit's bucket if it is still at `expected_seq`, else WrongLastSequence."""
        subject = self._rates_subject_prefix + queue
        # the stream is made with the first bucket: queues without a shared rate never need it
        stream = (self.rates_stream, self._rates_subject_prefix + ">") if expected_seq == 0 else None
        await self._replace_last(subject, state, expected_seq, stream, storage="memory")

    async def write_topics(self, document: bytes, expected_seq: int) -> None:
        """Replace the subscriptions document if it is still at `expected_seq`, else raise
        WrongLastSequence."""
        await self._replace_last(
            self.topics_subject, document, expected_seq, (self.topics_stream, self.topics_subject)
        )

    async def _replace_last(
        self,
        subject: str,
        data: bytes,
        expected_seq: int,
        stream: tuple[str, str] | None,
        storage: str = "file",
    ) -> None:
        """Publish `data` as the one record of `subject` if its last is still at `expected_seq`
        (compare-and-set), else WrongLastSequence; `stream` (name, subjects) is created first
        when given (one record per subject, on `storage`)."""
        if stream is not None:
            name, subjects = stream
            config = {
                "name": name,
                "subjects": [subjects],
                "retention": "limits",
                "storage": storage,
                "num_replicas": self.options.replicas,
                "max_msgs_per_subject": 1,
            }
            try:
                await self.api(f"STREAM.CREATE.{name}", config)
            except nats.js.errors.APIError as exc:
                if _error_code(exc) != STREAM_NAME_IN_USE:
                    raise
        headers = {"Nats-Expected-Last-Subject-Sequence": str(expected_seq)}

        async def call() -> None:
            try:
                await self.js.publish(subject, data, timeout=REQUEST_TIMEOUT_SECONDS, headers=headers)
            except nats.js.errors.APIError as exc:
                if _error_code(exc) == WRONG_LAST_SEQUENCE:
                    raise WrongLastSequence(str(exc)) from exc
                raise

        await self._retrying(call)
