"""Which partition of a partitioned queue a message goes to: one rule for every engine, so a queue
keeps its placement when its data moves between engines and a group always lands in one partition
(its order is kept inside that partition).

- a message with a group goes where its group hashes: one group, one partition, one order;
- else one with a dedup id goes where its dedup id hashes, so a second send with the same id meets
  the first one's claim in the same partition (one atomic check, even across Redis Cluster slots);
- else it goes where its message id hashes: ids are random, so sends spread evenly.

The hash is CRC-32 of the UTF-8 text: stable across processes, machines and Python versions (the
built-in `hash` of a str is salted per process)."""

from __future__ import annotations

from zlib import crc32


def partition_key(group: str | None, dedup_id: str | None, message_id: str) -> str:
    """The text whose hash places a message: its group, else its dedup id, else its id."""
    if group is not None:
        return group
    if dedup_id is not None:
        return dedup_id
    return message_id


def partition_of(key: str, partitions: int) -> int:
    """0 <= partition < `partitions` for `key`; always 0 for a queue of one partition."""
    if partitions <= 1:
        return 0
    return crc32(key.encode("utf-8", "surrogatepass")) % partitions


def place(group: str | None, dedup_id: str | None, message_id: str, partitions: int) -> int:
    """The partition a message of a queue with `partitions` partitions is stored in."""
    return partition_of(partition_key(group, dedup_id, message_id), partitions)
