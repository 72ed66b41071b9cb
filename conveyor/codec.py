"""Message bodies to bytes and back: JSON, UTF-8 text or raw bytes. Never pickle.

A json body must be finite JSON that reads back as it was sent: NaN and ±Infinity (which other
languages' parsers refuse, failing a whole batch), dict keys that are not strings (`{1: 'a'}`
would read back as `{'1': 'a'}`, and `{1: 'a', '1': 'b'}` would lose a value), lone surrogates
(not UTF-8) and bytes (which would read back as a str) are refused with BodyNotSerializable,
naming where in the body they are. Richer values pydantic can serialise (models, dataclasses,
datetimes, UUIDs, sets, tuples) are written as their JSON form.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import pydantic_core

from conveyor.errors import BodyNotSerializable, InvalidContentType
from conveyor.types import CONTENT_TYPES, ContentType

# How deep the check of a body descends; pydantic-core refuses deeper nesting anyway.
MAX_BODY_DEPTH = 255
# Bytes that may only appear in serialised JSON as part of a string or of a non-finite number.
_NON_FINITE_MARKERS = (b"NaN", b"Infinity")


def check_content_type(content_type: object) -> ContentType:
    if content_type not in CONTENT_TYPES:
        hint = " (v8 is specific to the Workers runtime)" if content_type == "v8" else ""
        raise InvalidContentType(
            f"content_type must be one of {', '.join(CONTENT_TYPES)}; got {content_type!r}{hint}"
        )
    return content_type


def encode_body(body: Any, content_type: ContentType) -> bytes:
    if content_type == "json":
        return encode_json(body)
    if content_type == "text":
        if not isinstance(body, str):
            raise BodyNotSerializable(f"content_type='text' needs a str body, got {type(body).__name__}")
        try:
            return body.encode()
        except UnicodeEncodeError as exc:
            raise BodyNotSerializable(
                f"body holds a lone surrogate at character {exc.start}: text must be valid UTF-8"
            ) from None
    if not isinstance(body, bytes | bytearray | memoryview):
        raise BodyNotSerializable(f"content_type='bytes' needs a bytes body, got {type(body).__name__}")
    return bytes(body)


def encode_json(body: Any) -> bytes:
    """`body` as JSON bytes, or BodyNotSerializable saying what in it JSON cannot carry as it is."""
    if isinstance(body, bytes | bytearray | memoryview):
        raise BodyNotSerializable("a bytes body needs content_type='bytes'")
    try:
        data = pydantic_core.to_json(body)
    except (pydantic_core.PydanticSerializationError, ValueError, RecursionError) as exc:
        problem = _find_problem(body)
        raise BodyNotSerializable(problem or f"body is not JSON-serialisable: {exc}") from None
    if _reads_back_equal(data, body):
        return data  # the common case, checked in C: what reads back equal is faithful
    problem = _find_problem(body, strings=False)
    if problem is not None:
        raise BodyNotSerializable(problem)
    # a model or dataclass is not descended above: its floats show as tokens in the output
    if any(marker in data for marker in _NON_FINITE_MARKERS) and not _is_finite_json(data):
        raise BodyNotSerializable("body holds NaN or Infinity, which JSON has not: send null or a string")
    return data


def _reads_back_equal(data: bytes, body: Any) -> bool:
    """Whether `data` decodes to a value equal to `body`. NaN never equals itself, a key 1 is not
    "1", bytes are not a str: any of them sends the body on to the walk that names the problem
    (as do tuples, models and datetimes, which are fine but read back as another type)."""
    try:
        return bool(pydantic_core.from_json(data, allow_inf_nan=False) == body)
    except (ValueError, RecursionError):
        return False


def _is_finite_json(data: bytes) -> bool:
    try:
        pydantic_core.from_json(data, allow_inf_nan=False)
    except ValueError:
        return False
    return True


# Where in a body a value is: "body", or (where its container is, its key or index); named only
# when a problem is found (building the name of every value cost more than the check itself).
Where = str | tuple["Where", str | int]


def _name(where: Where) -> str:
    if isinstance(where, str):
        return where
    parent, key = where
    return f"{_name(parent)}[{key[:40]!r}]" if isinstance(key, str) else f"{_name(parent)}[{key}]"


def _fine(value: Any, strings: bool) -> bool:
    """Whether `value` is a scalar JSON carries as it is, told without a call of `_find_problem`
    (most of a body's values: the check of a send is mostly this)."""
    kind = type(value)
    return (
        (kind is str and not strings)
        or kind is int
        or kind is bool
        or value is None
        or (kind is float and math.isfinite(value))
    )


def _find_problem(value: Any, *, strings: bool = True, where: Where = "body", depth: int = 0) -> str | None:
    """What in `value` JSON cannot carry faithfully, and where; None when nothing is found.

    Exact types are tested first: this runs on every send. `strings`: also look for lone
    surrogates (only needed to explain a failed serialisation).
    """
    kind = type(value)
    if kind is str:
        return _surrogate(value, where) if strings else None
    if kind is float:
        if math.isfinite(value):
            return None
        return f"{_name(where)} is {value}: JSON has no NaN or Infinity (send null or a string)"
    if kind is int or kind is bool or value is None:
        return None
    if isinstance(value, bytes | bytearray | memoryview):
        # pydantic-core would write it as a UTF-8 string: it would read back as str, not bytes
        return f"{_name(where)} is bytes, which JSON has not: send content_type='bytes', or base64 it"
    if depth >= MAX_BODY_DEPTH:
        return f"{_name(where)} is nested deeper than {MAX_BODY_DEPTH} levels"
    if kind is dict or isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                return (
                    f"{_name(where)} has the key {key!r} ({type(key).__name__}): JSON object keys must "
                    "be strings (it would read back as a string, and could collide with another key)"
                )
            if strings:
                problem = _surrogate(key, f"{_name(where)} has a key that")
                if problem is not None:
                    return problem
            if _fine(item, strings):
                continue
            problem = _find_problem(item, strings=strings, where=(where, key), depth=depth + 1)
            if problem is not None:
                return problem
        return None
    if kind is list or isinstance(value, list | tuple | set | frozenset):
        for index, item in enumerate(value):
            if _fine(item, strings):
                continue
            problem = _find_problem(item, strings=strings, where=(where, index), depth=depth + 1)
            if problem is not None:
                return problem
        return None
    if isinstance(value, str):  # a str subclass (an enum member, say)
        return _surrogate(value, where) if strings else None
    if isinstance(value, float):
        return _find_problem(float(value), strings=strings, where=where, depth=depth)
    return None


def _surrogate(text: str, where: Where) -> str | None:
    if text.isascii():
        return None
    try:
        text.encode()
    except UnicodeEncodeError as exc:
        return f"{_name(where)} holds a lone surrogate at character {exc.start}: strings must be valid UTF-8"
    return None


def decode_body(data: bytes, content_type: ContentType) -> Any:
    if content_type == "json":
        return pydantic_core.from_json(data)
    if content_type == "text":
        return data.decode()
    return data
