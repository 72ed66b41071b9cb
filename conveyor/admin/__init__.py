"""The operations the CLI, the HTTP API and the dashboard share, on the public API: every queue
with its stats, every topic with its subscriptions (admin/topics.py), chunked replay of dead
letters, which queue holds whose dead letters, net rates, the one JSON document of a queue, a
message and a topic that `--json` and the HTTP API both print, and the last hour of every
queue's figures, sampled in the background (the dashboard's charts), and the workers seen recently.
"""

from conveyor.admin.dead_letters import REPLAY_CHUNK, movable, replay
from conveyor.admin.documents import iso, message_document, pull_consumer_document, queue_document
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
from conveyor.admin.topics import (
    SubscriptionRequest,
    create_topic,
    delete_topic,
    every_topic,
    one_topic,
    publish_document,
    subscribe,
    subscription_document,
    topic_document,
    unsubscribe,
)
from conveyor.admin.workers import recent_workers, worker_document

__all__ = [
    "DLQ_SUFFIX",
    "HISTORY_SECONDS",
    "REPLAY_CHUNK",
    "SAMPLE_INTERVAL_SECONDS",
    "Point",
    "QueueHistory",
    "Reading",
    "Sample",
    "SubscriptionRequest",
    "create_topic",
    "dead_letter_queues",
    "declared_dead_letter_queues",
    "delete_topic",
    "every_queue",
    "every_topic",
    "iso",
    "message_document",
    "movable",
    "net_rates",
    "one_queue",
    "one_topic",
    "publish_document",
    "pull_consumer_document",
    "queue_document",
    "recent_workers",
    "replay",
    "subscribe",
    "subscription_document",
    "topic_document",
    "unsubscribe",
    "worker_document",
]
