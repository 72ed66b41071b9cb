"""`conveyor send QUEUE [BODY | - | --file messages.jsonl]`: send one message, or a file of them."""

from __future__ import annotations

import enum
import json
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from conveyor.app import App
from conveyor.cli.output import CommandError, emit_json, out, parse_seconds, progress_bar
from conveyor.cli.state import current, run
from conveyor.codec import encode_body
from conveyor.headers import check_headers, headers_size
from conveyor.limits import Limits
from conveyor.producer import SendRequest
from conveyor.types import ContentType


class ContentTypeChoice(enum.StrEnum):
    json = "json"
    text = "text"
    bytes = "bytes"


@dataclass(frozen=True, slots=True)
class Line:
    number: int
    body: Any
    size: int  # serialised bytes, as the batch limit counts them


def register(cli: typer.Typer) -> None:
    cli.command("send")(send)


def send(
    queue: Annotated[str, typer.Argument(help="The queue to send to.", show_default=False)],
    body: Annotated[
        str | None,
        typer.Argument(help="The message body; '-' reads it from stdin.", show_default=False),
    ] = None,
    file: Annotated[
        Path | None,
        typer.Option(
            "--file",
            help="Send every line of this file (JSON Lines for json) as a message; '-' is stdin.",
            show_default=False,
            dir_okay=False,
            allow_dash=True,
        ),
    ] = None,
    delay: Annotated[
        float | None,
        typer.Option(
            "--delay",
            parser=parse_seconds,
            metavar="DURATION",
            help="Deliver after this long (seconds, or 30s, 5m, 2h, 1d); default: the queue's delay.",
            show_default=False,
        ),
    ] = None,
    content_type: Annotated[
        ContentTypeChoice, typer.Option("--content-type", "-t", help="How to read and store the body.")
    ] = ContentTypeChoice.json,
    dedup_id: Annotated[
        str | None,
        typer.Option(
            "--dedup-id",
            help="Stored once: a send naming it again within the queue's dedup window prints the first id.",
            show_default=False,
        ),
    ] = None,
    header: Annotated[
        list[str] | None,
        typer.Option(
            "--header",
            "-H",
            metavar="KEY=VALUE",
            help="A header the handler reads in message.headers (repeatable; with --file, on every message).",
            show_default=False,
        ),
    ] = None,
    group: Annotated[
        str | None,
        typer.Option(
            "--group",
            help="An ordered message group: its messages are delivered in send order, one at a time "
            "(with --file: every line, in file order).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Send BODY (JSON unless --content-type says otherwise), stdin ('-'), or every line of --file."""
    kind: ContentType = content_type.value
    headers = parse_headers(header or [])
    if (body is None) == (file is None):
        raise typer.BadParameter("give a BODY (or '-' for stdin) or --file, not both")
    if file is not None:
        if dedup_id is not None:
            raise typer.BadParameter("--dedup-id names one message: not with --file")
        _send_file(queue, file, kind, delay, headers, group)
        return
    assert body is not None
    value = read_body(body, kind)
    message_id = run(
        lambda app: app.queue(queue).send(
            value, delay_seconds=delay, content_type=kind, dedup_id=dedup_id, headers=headers, group=group
        )
    )
    if current().json:
        emit_json({"queue": queue, "id": message_id})
    else:
        out().print(f"Sent message {message_id} to {queue!r}.", markup=False)


def parse_headers(pairs: list[str]) -> dict[str, str] | None:
    """`--header KEY=VALUE` options as a dict (None for none); the value may hold '=' itself."""
    headers: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"--header takes KEY=VALUE, got {pair!r}")
        headers[key] = value
    return headers or None


def read_body(body: str, kind: ContentType) -> Any:
    if body == "-":
        if kind == "bytes":
            return sys.stdin.buffer.read()
        return _parse(sys.stdin.read(), kind, "stdin")
    return _parse(body, kind, "BODY")


def _parse(text: str, kind: ContentType, where: str) -> Any:
    if kind == "text":
        return text
    if kind == "bytes":
        return text.encode()
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise CommandError(
            f"{where} is not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}); "
            "use --content-type text to send it as text",
            code="invalid_json",
        ) from None


def _read_lines(file: Path, kind: ContentType, limits: Limits, extra: int = 0) -> list[Line]:
    """Every non-empty line, parsed and sized up front so a bad line sends nothing; `extra` is
    what every message adds beside its body (its headers)."""
    name = "stdin" if str(file) == "-" else str(file)
    try:
        if str(file) == "-":
            raw_lines = sys.stdin.buffer.read().splitlines()
        else:
            raw_lines = file.read_bytes().splitlines()
    except OSError as exc:
        raise CommandError(f"cannot read {name}: {exc.strerror or exc}", code="unreadable_file") from None
    lines: list[Line] = []
    for number, raw in enumerate(raw_lines, start=1):
        if not raw.strip():
            continue
        if kind == "bytes":
            value: Any = raw
        else:
            try:
                text = raw.decode()
            except UnicodeDecodeError:
                raise CommandError(f"{name}, line {number}: not UTF-8 text", code="invalid_input") from None
            value = _parse(text, kind, f"{name}, line {number}")
        size = len(encode_body(value, kind))
        if size > limits.max_message_bytes:
            raise CommandError(
                f"{name}, line {number}: body is {size:,} bytes; the limit is {limits.max_message_bytes:,}",
                code="message_too_large",
            )
        lines.append(Line(number, value, size + extra))
    return lines


def batches(lines: list[Line], limits: Limits) -> Iterator[list[Line]]:
    """Consecutive runs of lines within the batch count and byte limits."""
    batch: list[Line] = []
    size = 0
    for line in lines:
        if batch and (len(batch) >= limits.max_batch_messages or size + line.size > limits.max_batch_bytes):
            yield batch
            batch, size = [], 0
        batch.append(line)
        size += line.size
    if batch:
        yield batch


def _send_file(
    queue: str,
    file: Path,
    kind: ContentType,
    delay: float | None,
    headers: dict[str, str] | None,
    group: str | None,
) -> None:
    as_json = current().json

    async def work(app: App) -> tuple[int, int]:
        await app.get_queue(queue)  # an unknown queue fails before the file is read
        checked = check_headers(headers, app.limits)  # bad headers fail before the file is read
        lines = _read_lines(file, kind, app.limits, headers_size(checked))
        handle = app.queue(queue)
        sent = count = 0
        progress = progress_bar("sending", enabled=not as_json)
        with progress:
            task = progress.add_task("send", total=len(lines))
            for batch in batches(lines, app.limits):
                requests = [
                    SendRequest(line.body, content_type=kind, headers=checked, group=group) for line in batch
                ]
                await handle.send_batch(requests, delay_seconds=delay)
                sent += len(batch)
                count += 1
                progress.update(task, completed=sent)
        return sent, count

    started = time.perf_counter()
    sent, count = run(work)
    elapsed = time.perf_counter() - started
    if as_json:
        emit_json({"queue": queue, "sent": sent, "batches": count, "seconds": round(elapsed, 3)})
    else:
        rate = f", {sent / elapsed:,.0f} msg/s" if elapsed > 0 and sent else ""
        out().print(
            f"Sent {sent:,} message(s) to {queue!r} in {count:,} batch(es) ({elapsed:.2f}s{rate}).",
            markup=False,
        )
