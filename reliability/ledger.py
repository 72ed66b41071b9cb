"""The ledger: append-only, fsynced JSON-lines files that every process of a run writes its side
of the story to, and the reader that puts them back together for the checker.

Each process writes files of its own (`<kind>-<pid>.jsonl`), so no two processes share a file
and a SIGKILL can at worst cut the last line of its own file; the reader skips a cut line. A
line is on disk (written and fsynced) before the call that records it returns: a handler
records its completions before it returns, a producer records a send's attempt before the call
and its outcome after it.

Kinds of record:
- `sends`: {"e": "try", "n": batch, "keys": [...], "t"} before a send; then {"e": "ok", "n",
  "ids"} or {"e": "failed" | "unknown", "n", "error", "type", "conveyor": bool}. A `try` with
  no outcome (the producer was killed mid-call) is unknown.
- `done`: one line per message a handler completed: {"id", "key", "pid", "a": attempts,
  "s": when its batch started, "t": when the handler recorded it}.
- `poison`: a delivery of a poison message, recorded before it acts (exits, raises, blocks).
- `stalls`: the event loop of a worker ran late by at least half the visibility timeout.
- `events`: the harness's own record: processes started and ended, faults and their end.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class LedgerFile:
    """One process's append-only file of one kind; every record is fsynced before `write` returns."""

    def __init__(self, directory: Path, kind: str) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / f"{kind}-{os.getpid()}.jsonl"
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def write(self, *records: dict[str, Any]) -> None:
        """Append `records` in one write (a kill cannot split them but at the end) and fsync."""
        if not records:
            return
        data = "".join(json.dumps(record, separators=(",", ":")) + "\n" for record in records)
        os.write(self._fd, data.encode())
        os.fsync(self._fd)

    def close(self) -> None:
        os.close(self._fd)


def now() -> float:
    """Wall-clock seconds: every process of a run is on one machine, so their times compare."""
    return time.time()


def read_records(directory: Path, kind: str) -> Iterator[dict[str, Any]]:
    """Every whole record of `kind` from every process, file by file."""
    for path in sorted(directory.glob(f"{kind}-*.jsonl")):
        yield from read_file(path)


def read_file(path: Path) -> Iterator[dict[str, Any]]:
    """The whole records of one file (a last line cut by a kill mid-write is skipped)."""
    with path.open("rb") as lines:
        for line in lines:
            if not line.endswith(b"\n"):
                break  # cut mid-write: its call never returned, so nothing relied on it
            yield json.loads(line)


@dataclass
class Completion:
    id: str
    key: str
    pid: int
    attempts: int
    started: float
    at: float


@dataclass
class Event:
    kind: str
    at: float
    pid: int | None = None
    role: str = ""
    detail: str = ""
    code: int | None = None
    #: for a process end: True when the harness asked for it with SIGTERM and it exited 0
    clean: bool = False


@dataclass
class SendOutcomes:
    ok: dict[str, str | None] = field(default_factory=dict)  # key -> message id when known
    failed: dict[str, str] = field(default_factory=dict)  # key -> error
    unknown: dict[str, str] = field(default_factory=dict)  # key -> why
    #: errors a producer saw that are not conveyor errors: (type, text)
    foreign_errors: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class Ledger:
    """Everything a run recorded, put back together."""

    sends: SendOutcomes
    completions: list[Completion]
    poison_deliveries: list[dict[str, Any]]
    stalls: list[tuple[int, float, float]]  # pid, from, to
    events: list[Event]

    @classmethod
    def read(cls, directory: Path) -> Ledger:
        completions = [
            Completion(r["id"], r["key"], r["pid"], r["a"], r["s"], r["t"])
            for r in read_records(directory, "done")
        ]
        completions.sort(key=lambda completion: completion.at)
        return cls(
            sends=_send_outcomes(directory),
            completions=completions,
            poison_deliveries=list(read_records(directory, "poison")),
            stalls=[(r["pid"], r["from"], r["to"]) for r in read_records(directory, "stalls")],
            events=sorted((Event(**r) for r in read_records(directory, "events")), key=lambda e: e.at),
        )


def _send_outcomes(directory: Path) -> SendOutcomes:
    outcomes = SendOutcomes()
    for path in sorted(directory.glob("sends-*.jsonl")):
        pending: dict[int, list[str]] = {}
        for record in read_file(path):
            event, number = record["e"], record["n"]
            if event == "try":
                pending[number] = record["keys"]
                continue
            keys = pending.pop(number)
            if event == "ok":
                for key, message_id in zip(keys, record["ids"], strict=True):
                    outcomes.ok[key] = message_id
                continue
            target = outcomes.failed if event == "failed" else outcomes.unknown
            for key in keys:
                target[key] = record["error"]
            if not record.get("conveyor", True):
                outcomes.foreign_errors.append((record["type"], record["error"]))
        for keys in pending.values():  # tried, never answered: the producer died mid-call
            for key in keys:
                outcomes.unknown[key] = "the producer was killed during the call"
    return outcomes
