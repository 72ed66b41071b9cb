"""Message bodies to bytes and back: JSON, UTF-8 text or raw bytes. Never pickle."""

from __future__ import annotations

from typing import Any

import pydantic_core

from conveyor.errors import BodyNotSerializable, InvalidContentType
from conveyor.types import CONTENT_TYPES, ContentType


def check_content_type(content_type: object) -> ContentType:
    if content_type not in CONTENT_TYPES:
        raise InvalidContentType(
            f"content_type must be one of {', '.join(CONTENT_TYPES)}; got {content_type!r}"
        )
    return content_type


def encode_body(body: Any, content_type: ContentType) -> bytes:
    if content_type == "json":
        if isinstance(body, bytes | bytearray | memoryview):
            raise BodyNotSerializable("a bytes body needs content_type='bytes'")
        try:
            return pydantic_core.to_json(body)
        except pydantic_core.PydanticSerializationError as exc:
            raise BodyNotSerializable(f"body is not JSON-serialisable: {exc}") from None
    if content_type == "text":
        if not isinstance(body, str):
            raise BodyNotSerializable(f"content_type='text' needs a str body, got {type(body).__name__}")
        return body.encode()
    if not isinstance(body, bytes | bytearray | memoryview):
        raise BodyNotSerializable(f"content_type='bytes' needs a bytes body, got {type(body).__name__}")
    return bytes(body)


def decode_body(data: bytes, content_type: ContentType) -> Any:
    if content_type == "json":
        return pydantic_core.from_json(data)
    if content_type == "text":
        return data.decode()
    return data
