"""How `conveyor worker` and `conveyor serve` log: plain lines (the default) or one JSON object per
line (`--log-format json`), on stderr, so stdout stays the banner or `--json` events.

A JSON line carries `time` (ISO 8601, UTC), `level`, `logger` and `message`, and, where the log
call passes them with `extra=`, `queue`, `message_id`, `attempt` and `outcome`; an exception's
traceback is one `traceback` string, so a failure stays one line.
"""

from __future__ import annotations

import datetime as dt
import enum
import json
import logging
import sys
from typing import Any

# The fields a log call may add with `extra=` that a JSON line carries (others stay out: a
# library's extras are not ours to publish).
CONTEXT_FIELDS = ("queue", "message_id", "attempt", "outcome")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
LOG_FORMAT_HELP = (
    "Log lines on stderr as text, or as one JSON object per line "
    "(time, level, logger, message, queue, message_id, attempt, outcome)."
)


class LogLevel(enum.StrEnum):
    debug = "debug"
    info = "info"
    warning = "warning"
    error = "error"


class LogFormat(enum.StrEnum):
    text = "text"
    json = "json"


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in CONTEXT_FIELDS:
            value = record.__dict__.get(name)
            if value is not None:
                document[name] = value
        if record.exc_info:
            document["traceback"] = self.formatException(record.exc_info)
        elif record.exc_text:
            document["traceback"] = record.exc_text
        return json.dumps(document, ensure_ascii=False, default=str)


def configure_logging(level: LogLevel, log_format: LogFormat = LogFormat.text) -> None:
    """conveyor's loggers at `level`, to stderr in `log_format`, unless the root logger already
    has a handler (an embedding program's choice wins)."""
    # plain lines, not rich: a worker's log usually goes to a file, journald or a container log
    logging.getLogger("conveyor").setLevel(level.value.upper())
    root = logging.getLogger()
    if root.handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    formatter = JsonFormatter() if log_format is LogFormat.json else logging.Formatter(TEXT_FORMAT)
    handler.setFormatter(formatter)
    root.addHandler(handler)
    root.setLevel(level.value.upper())
