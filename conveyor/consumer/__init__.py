"""The consumer runtime: batches, per-message outcomes, leases, dead letters, graceful workers."""

from conveyor.consumer.message import Message, MessageBatch
from conveyor.consumer.spec import ConsumerSpec
from conveyor.consumer.worker import Worker, run_worker

__all__ = ["ConsumerSpec", "Message", "MessageBatch", "Worker", "run_worker"]
