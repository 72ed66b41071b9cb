"""Request bodies: read at most a limit (never buffering more) within a time limit, then parsed
into a pydantic model.

The size limit is checked twice: against Content-Length before a byte is read, and while the
body streams in (a chunked upload has no Content-Length). Over it, the request is refused with
413. A body that takes longer than the time limit to arrive is refused with 408, so clients
trickling bodies cannot hold the server's request slots (see overload.py) for as long as they
like. Either way the connection is closed, since the rest of the body was not read.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, TypeVar

import pydantic
from starlette.requests import Request

from conveyor.http import cloudflare_codes
from conveyor.http.envelope import INVALID_INPUT, REQUEST_TIMEOUT, REQUEST_TOO_LARGE, ApiError
from conveyor.limits import Limits

M = TypeVar("M", bound=pydantic.BaseModel)

# JSON framing around a batch's bodies: per message the keys, quotes and settings
# (`{"body": ..., "content_type": "bytes", "delay_seconds": 86400}`), and the envelope itself.
MESSAGE_FRAMING_BYTES = 128
ENVELOPE_FRAMING_BYTES = 16_384
# How long a request body may take to arrive in full, in seconds.
DEFAULT_BODY_TIMEOUT_SECONDS = 10.0
# Sent with a refusal that left part of the body unread: the connection cannot be reused.
CLOSE = {"Connection": "close"}


def request_limit(limits: Limits) -> int:
    """The largest request body the API reads: a full batch, twice over, plus its JSON framing.

    Twice the batch's bytes, because a body travels as JSON inside JSON (escaped text, base64
    bytes, pretty-printing) and so takes more room than it does stored. The exact message and
    batch limits are checked afterwards, on the bodies as conveyor stores them.
    """
    return (
        2 * limits.max_batch_bytes
        + limits.max_batch_messages * MESSAGE_FRAMING_BYTES
        + ENVELOPE_FRAMING_BYTES
    )


def too_large(size: int, limit: int, *, at_least: bool = False) -> ApiError:
    amount = f"more than {limit:,}" if at_least else f"{size:,}"
    return ApiError(
        413, REQUEST_TOO_LARGE, f"the request body is {amount} bytes; the limit is {limit:,}", headers=CLOSE
    )


async def read_body(request: Request, limit: int, timeout: float = DEFAULT_BODY_TIMEOUT_SECONDS) -> bytes:
    """The request body, at most `limit` bytes, arrived within `timeout` seconds."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise ApiError(
                400, INVALID_INPUT, f"Content-Length is not a number: {declared[:40]!r}", headers=CLOSE
            )
        if int(declared) > limit:
            raise too_large(int(declared), limit)
    body = bytearray()
    try:
        async with asyncio.timeout(timeout):
            async for chunk in request.stream():
                body += chunk
                if len(body) > limit:
                    raise too_large(len(body), limit, at_least=True)
    except TimeoutError:
        raise ApiError(
            408,
            REQUEST_TIMEOUT,
            f"the request body did not arrive within {timeout:g}s ({len(body):,} bytes came)",
            headers=CLOSE,
        ) from None
    return bytes(body)


def describe(errors: Sequence[Any]) -> list[str]:
    """pydantic's errors as `messages[2].body: Input should be a valid string`, one per problem."""
    described = []
    for error in errors:
        where = ""
        for part in error["loc"]:
            where += f"[{part}]" if isinstance(part, int) else (f".{part}" if where else str(part))
        message = str(error["msg"]).removeprefix("Value error, ")
        described.append(f"{where}: {message}" if where else message)
    return described


async def parse_body(
    request: Request,
    model: type[M],
    limit: int,
    *,
    optional: bool = False,
    timeout: float = DEFAULT_BODY_TIMEOUT_SECONDS,
) -> M:
    """The request's JSON body as `model`; 400 naming every bad field, 413 over `limit`, 408
    past `timeout`.

    `optional`: an empty body means every field takes its default.
    """
    raw = await read_body(request, limit, timeout)
    if not raw.strip():
        if not optional:
            raise ApiError(400, INVALID_INPUT, "this request needs a JSON body")
        raw = b"{}"
    try:
        return model.model_validate_json(raw)
    except pydantic.ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False)
        details = describe(errors)
        not_json = any(error["type"] == "json_invalid" for error in errors)
        raise ApiError(
            400,
            INVALID_INPUT,
            details[0],
            details=details,
            cloudflare_code=cloudflare_codes.JSON_BODY_MALFORMED if not_json else None,
        ) from None


class BodyReader:
    """Reads and parses request bodies with one App's limits and one time limit."""

    def __init__(self, limits: Limits, timeout: float = DEFAULT_BODY_TIMEOUT_SECONDS) -> None:
        self.limit = request_limit(limits)
        self.timeout = timeout

    async def parse(self, request: Request, model: type[M], *, optional: bool = False) -> M:
        return await parse_body(request, model, self.limit, optional=optional, timeout=self.timeout)
