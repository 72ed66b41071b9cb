"""The settle policy every engine shares (conveyor/core/settle.py): what reaches the engine, and
how its statuses become a SettleResult. The engines' side is in tests/backends/test_contract.py."""

from __future__ import annotations

from conveyor.core import settle
from conveyor.types import DeadLetter, Retry, Settlement


def test_malformed_and_repeated_lease_ids_never_reach_the_engine_and_are_stale() -> None:
    settlement = Settlement(
        acks=["m1.t", "m1.t", "nonsense", "m2.t"],
        retries=[Retry("m2.t", 5.0), Retry("m3.t", 1.0)],
        dead_letters=[DeadLetter("m4.t", "new", "boom", "dlq", 4)],
    )
    checked = settle.check("jobs", settlement, rows=False, now=100.0)
    assert checked.outcomes.acks == [("m1", "t", 0), ("m2", "t", 0)]
    assert checked.outcomes.retries == [(("m3", "t", 0), 1.0)]
    assert checked.refused == ["m1.t", "nonsense", "m2.t"]
    assert checked.named == ["m1.t", "m2.t", "m3.t", "m4.t"]
    [move] = checked.outcomes.dead_letters
    assert (move.new_id, move.queue, move.lease) == ("new", "dlq", ("m4", "t", 0))
    record = move.record
    assert (record.original_id, record.source_queue, record.attempts, record.error) == (
        "m4",
        "jobs",
        4,
        "boom",
    )
    assert record.dead_lettered_at == 100.0
    assert checked.dead_letter_queues == {"dlq"}


def test_engines_that_name_rows_take_only_lease_ids_with_a_row() -> None:
    checked = settle.check("jobs", Settlement(acks=["m.t.7", "m.t", "m.t.x"]), rows=True, now=0.0)
    assert checked.outcomes.acks == [("m", "t", 7)]
    assert checked.refused == ["m.t", "m.t.x"]


def test_the_result_counts_what_took_effect_and_names_the_rest_stale() -> None:
    settlement = Settlement(acks=["a.t", "b.t", "bad"], retries=[Retry("c.t")], dead_letters=[])
    checked = settle.check("jobs", settlement, rows=False, now=0.0)
    result = settle.result(checked, [True, False, True])
    assert (result.acked, result.retried, result.dead_lettered) == (1, 1, 0)
    assert result.stale == ["bad", "b.t"]
    assert settle.result(checked, [True, True, True]).stale == ["bad"]
