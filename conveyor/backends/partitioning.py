"""Which partition of a partitioned queue a message goes to: one rule for every engine, so a queue
keeps its placement when its data moves between engines and a group always lands in one partition
(its order is kept inside that partition).

- a message with a group goes where its group hashes: one group, one partition, one order;
- else one with a dedup id goes where its dedup id hashes, so a second send with the same id meets
  the first one's claim in the same partition (one atomic check, even across Redis Cluster slots);
- else it goes where its message id hashes: ids are random, so sends spread evenly.

The hash is CRC-32 of the UTF-8 text: stable across processes, machines and Python versions (the
built-in `hash` of a str is salted per process).

Deduplication follows placement: a dedup id is unique within the partition its message is placed
in (`dedup_key`), so the check is one partition's, atomic even where partitions are apart. A
message without a group goes by its dedup id, so its dedup id is unique in the whole queue; one
with a group is checked within its group's partition (SQS FIFO's `DeduplicationScope=messageGroup`
is the same idea)."""

from __future__ import annotations

from zlib import crc32


def partition_key(group: str | None, dedup_id: str | None, message_id: str) -> str:
    """The text whose hash places a message: its group, else its dedup id, else its id."""
    if group is not None:
        return group
    if dedup_id is not None:
        return dedup_id
    return message_id


def placement_hash(key: str) -> int:
    """The hash `partition_of` takes modulo the partition count (0 <= hash < 2**32): for an engine
    that learns the count only inside its own statement (PostgreSQL's send takes it modulo
    there)."""
    return crc32(key.encode("utf-8", "surrogatepass"))


def partition_of(key: str, partitions: int) -> int:
    """0 <= partition < `partitions` for `key`; always 0 for a queue of one partition."""
    if partitions <= 1:
        return 0
    return placement_hash(key) % partitions


def place(group: str | None, dedup_id: str | None, message_id: str, partitions: int) -> int:
    """The partition a message of a queue with `partitions` partitions is stored in."""
    return partition_of(partition_key(group, dedup_id, message_id), partitions)


def dedup_key(group: str | None, dedup_id: str, message_id: str, partitions: int) -> str:
    """The key a dedup id is claimed under in its queue: the dedup id itself in a queue of one
    partition (as always); in a partitioned queue, prefixed with the partition the message is
    placed in ("3:order-7"), so an engine that keeps every partition in one structure scopes the
    claim as one that keeps each apart does."""
    if partitions <= 1:
        return dedup_id
    return f"{place(group, dedup_id, message_id, partitions)}:{dedup_id}"
