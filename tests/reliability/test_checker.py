"""The checker's rules on hand-written ledgers: what counts as lost, which duplicates a fault
explains, what the poison rule demands. The harness is only as good as these."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from reliability.checker import ACK_WINDOW_SECONDS, DeadLetterSeen, Expectations, FinalState, Verdict, check
from reliability.ledger import Ledger, LedgerFile

T0 = 1_000_000.0
WORKER, OTHER_WORKER = 101, 102


class Story:
    """A run's ledger, written record by record."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.files = {kind: LedgerFile(directory, kind) for kind in ("sends", "done", "poison", "events")}
        self.batches = 0

    def sent(self, *keys: str, outcome: str = "ok") -> None:
        self.batches += 1
        records: list[dict[str, Any]] = [{"e": "try", "n": self.batches, "keys": list(keys), "t": T0}]
        if outcome == "ok":
            records.append({"e": "ok", "n": self.batches, "ids": [f"id-{key}" for key in keys]})
        elif outcome == "failed":
            records.append(
                {"e": "failed", "n": self.batches, "error": "E", "type": "conveyor.X", "conveyor": True}
            )
        self.files["sends"].write(*records)

    def done(self, key: str, at: float, *, pid: int = WORKER, attempts: int = 1) -> None:
        record = {"id": f"id-{key}", "key": key, "pid": pid, "a": attempts, "s": at - 0.1, "t": at}
        self.files["done"].write(record)

    def delivered_poison(self, key: str, at: float, attempts: int) -> None:
        self.files["poison"].write({"key": key, "id": f"id-{key}", "a": attempts, "pid": WORKER, "t": at})

    def event(self, kind: str, at: float, **fields: Any) -> None:
        self.files["events"].write({"kind": kind, "at": at, **fields})

    def check(self, dead: list[DeadLetterSeen] | None = None, poison: set[str] | None = None) -> Verdict:
        final = FinalState(dead or [], [], 0)
        return check(Ledger.read(self.directory), final, Expectations(3, 2.0, poison or set()))


def test_an_acknowledged_message_neither_completed_nor_dead_lettered_is_lost(tmp_path: Path) -> None:
    story = Story(tmp_path)
    story.sent("a", "b", "c")
    story.done("a", T0 + 1)
    verdict = story.check(dead=[DeadLetterSeen("b", "boom", 4)], poison={"b"})
    assert (verdict.figures.sent_ok, verdict.figures.completed, verdict.figures.lost) == (3, 1, 1)
    assert not verdict.passed


def test_a_send_cut_by_a_kill_is_unknown_not_lost(tmp_path: Path) -> None:
    story = Story(tmp_path)
    story.sent("a", "b", outcome="none")
    verdict = story.check()
    assert (verdict.figures.sent_ok, verdict.figures.unknown, verdict.figures.lost) == (0, 2, 0)
    assert verdict.passed


def test_a_failed_send_that_was_stored_breaks_a_rule(tmp_path: Path) -> None:
    story = Story(tmp_path)
    story.sent("a", outcome="failed")
    story.done("a", T0 + 1)
    verdict = story.check()
    assert verdict.figures.failed_but_stored == 1
    assert not verdict.passed


def test_a_redelivery_after_its_worker_died_is_explained(tmp_path: Path) -> None:
    story = Story(tmp_path)
    story.sent("a")
    story.done("a", T0 + 1)
    story.event("exit", T0 + 1.5, pid=WORKER, role="worker", code=-9, clean=False)
    story.done("a", T0 + 5, pid=OTHER_WORKER, attempts=2)
    verdict = story.check()
    assert (verdict.figures.explained, verdict.figures.unexplained) == (1, 0)
    assert verdict.passed


def test_a_redelivery_long_after_the_ack_or_after_a_clean_stop_is_unexplained(tmp_path: Path) -> None:
    story = Story(tmp_path)
    story.sent("late", "clean")
    story.done("late", T0 + 1)
    story.done("clean", T0 + 1, pid=OTHER_WORKER)
    story.event("exit", T0 + 1 + ACK_WINDOW_SECONDS + 5, pid=WORKER, role="worker", code=-9, clean=False)
    story.event("exit", T0 + 2, pid=OTHER_WORKER, role="worker", code=0, clean=True)
    story.done("late", T0 + 30, pid=OTHER_WORKER, attempts=2)
    story.done("clean", T0 + 30, pid=WORKER, attempts=2)
    verdict = story.check()
    assert (verdict.figures.explained, verdict.figures.unexplained) == (0, 2)
    assert not verdict.passed


def test_the_same_delivery_twice_is_explained_only_by_an_engine_fault(tmp_path: Path) -> None:
    story = Story(tmp_path)
    story.sent("a", "b")
    story.done("a", T0 + 1)
    story.event("exit", T0 + 1.5, pid=WORKER, role="worker", code=-9, clean=False)
    story.done("a", T0 + 5, pid=OTHER_WORKER, attempts=1)  # a worker death does not undo an attempt
    story.done("b", T0 + 20)
    story.event("engine_fault", T0 + 21)
    story.event("engine_recovered", T0 + 24)
    story.done("b", T0 + 26, pid=OTHER_WORKER, attempts=1)  # a crashed server forgets the lease
    verdict = story.check()
    assert (verdict.figures.explained, verdict.figures.unexplained) == (1, 1)


def test_every_poison_must_be_dead_lettered_with_its_error_within_its_deliveries(tmp_path: Path) -> None:
    story = Story(tmp_path)
    story.sent("poison", "innocent", "quiet-poison")
    story.done("innocent", T0 + 1)
    for attempt in range(1, 6):
        story.delivered_poison("poison", T0 + attempt, attempt)
    dead = [
        DeadLetterSeen("poison", "exited", 5),
        DeadLetterSeen("innocent", "x", 1),
        DeadLetterSeen("quiet-poison", "", 1),
    ]
    verdict = story.check(dead=dead, poison={"poison", "quiet-poison"})
    figures = verdict.figures
    assert (figures.poison, figures.poison_in_dlq, figures.innocent_in_dlq) == (2, 1, 1)
    assert figures.max_poison_deliveries == 5
    assert len(verdict.violations) == 3  # a poison without its error, an innocent, 5 > 3 + 1 deliveries


def test_recovery_is_the_longest_wait_from_a_fault_to_the_next_completion(tmp_path: Path) -> None:
    story = Story(tmp_path)
    story.sent("a", "b", "c")
    story.done("a", T0 + 1)
    story.event("kill", T0 + 2, pid=WORKER, role="worker", detail="SIGKILL")
    story.done("b", T0 + 2.5)
    story.event("engine_fault", T0 + 3)
    story.done("c", T0 + 7)
    story.event("engine_recovered", T0 + 6)
    assert story.check().figures.recovery_seconds == 4.0
