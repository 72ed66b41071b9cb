"""The operations the CLI, the HTTP API and the dashboard share, on the public API: every queue
with its stats, chunked replay of dead letters, which queue holds whose dead letters, net rates,
the one JSON document of a queue and of a message that `--json` and the HTTP API both print,
and the last hour of every queue's figures, sampled in the background (the dashboard's charts).
"""

from conveyor.admin.dead_letters import REPLAY_CHUNK, movable, replay
from conveyor.admin.documents import iso, message_document, queue_document
from conveyor.admin.history import (
    HISTORY_SECONDS,
    SAMPLE_INTERVAL_SECONDS,
    Point,
    QueueHistory,
    Reading,
)
from conveyor.admin.overview import (
    DLQ_SUFFIX,
    Sample,
    dead_letter_queues,
    declared_dead_letter_queues,
    every_queue,
    net_rates,
    one_queue,
)

__all__ = [
    "DLQ_SUFFIX",
    "HISTORY_SECONDS",
    "REPLAY_CHUNK",
    "SAMPLE_INTERVAL_SECONDS",
    "Point",
    "QueueHistory",
    "Reading",
    "Sample",
    "dead_letter_queues",
    "declared_dead_letter_queues",
    "every_queue",
    "iso",
    "message_document",
    "movable",
    "net_rates",
    "one_queue",
    "queue_document",
    "replay",
]
