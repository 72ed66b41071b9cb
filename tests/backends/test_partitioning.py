"""The placement rule every engine shares (conveyor/backends/partitioning.py)."""

from __future__ import annotations

from collections import Counter

import pytest

from conveyor.backends.partitioning import place
from conveyor.core.ids import new_message_id


def test_a_queue_of_one_partition_keeps_everything_in_partition_0() -> None:
    assert {place("g", "d", new_message_id(), 1) for _ in range(50)} == {0}


def test_a_group_decides_over_a_dedup_id_and_the_message_id() -> None:
    placed = {place("user-42", f"dedup-{n}", new_message_id(), 8) for n in range(50)}
    assert len(placed) == 1


def test_a_dedup_id_places_a_message_without_a_group() -> None:
    placed = {place(None, "order-7", new_message_id(), 8) for _ in range(50)}
    assert len(placed) == 1


def test_the_placement_is_the_same_in_every_process() -> None:
    # CRC-32, not the salted built-in hash: these figures hold on any machine and Python
    assert [place(None, None, key, 8) for key in ("a", "user-42", "é")] == [3, 3, 6]


@pytest.mark.parametrize("partitions", [2, 8, 64])
def test_messages_without_group_or_dedup_id_spread_over_every_partition(partitions: int) -> None:
    counts = Counter(place(None, None, new_message_id(), partitions) for _ in range(200 * partitions))
    assert set(counts) == set(range(partitions))
    # random ids: no partition gets more than twice its share
    assert max(counts.values()) < 2 * 200
