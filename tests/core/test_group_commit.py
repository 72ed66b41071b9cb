"""The send group commit's policy, with a recording writer (the engines' side is in the
conformance suite: tests/backends/test_contract.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from conveyor.core import group_commit
from conveyor.core.group_commit import GroupCommitter
from conveyor.errors import BackendUnavailable
from conveyor.types import OutgoingMessage


def message(queue: str, n: int) -> OutgoingMessage:
    return OutgoingMessage(queue, f"id-{n}", b"{}", "json")


class Writer:
    """Records each write's message ids; holds every write until `release` is set; rejects the
    queue "missing" (as an engine rejects an unknown queue)."""

    def __init__(self, *, suspends: bool = False) -> None:
        #: every write gives the event loop a turn, as a network engine's does (else a released
        #: write returns without one, as SQLite's inline commit and the memory engine's do)
        self.suspends = suspends
        self.writes: list[list[str]] = []
        #: the task each write ran in
        self.tasks: list[asyncio.Task[object] | None] = []
        self.release = asyncio.Event()
        self.release.set()

    async def __call__(self, messages: Sequence[OutgoingMessage]) -> list[str]:
        self.writes.append([m.id for m in messages])
        self.tasks.append(asyncio.current_task())
        if self.suspends:
            await asyncio.sleep(0)
        await self.release.wait()
        if any(m.queue == "missing" for m in messages):
            raise LookupError("no such queue")
        if any(m.queue == "down" for m in messages):
            raise BackendUnavailable("the engine is down")
        return [f"stored-{m.id}" for m in messages]  # as an engine names what it stored


async def held_lone_write(
    queue: str = "q", *, suspends: bool = False
) -> tuple[Writer, GroupCommitter, asyncio.Task[list[str]]]:
    """A committer whose first send (id-0) is being written alone and held there by the writer."""
    writer = Writer(suspends=suspends)
    committer = GroupCommitter(writer)
    writer.release.clear()
    lone = asyncio.create_task(committer.submit([message(queue, 0)]))
    await asyncio.sleep(0)
    return writer, committer, lone


async def test_a_lone_send_is_written_at_once_and_sends_during_it_go_together_next() -> None:
    writer, committer, first = await held_lone_write()
    assert writer.writes == [["id-0"]]  # no hop through a flusher task
    rest = [asyncio.create_task(committer.submit([message("q", n)])) for n in range(1, 6)]
    await asyncio.sleep(0.01)
    assert writer.writes == [["id-0"]]  # they wait for the write under way
    writer.release.set()
    await asyncio.gather(first, *rest)
    assert writer.writes == [["id-0"], ["id-1", "id-2", "id-3", "id-4", "id-5"]]


async def test_a_lone_sender_writes_each_send_from_its_own_task() -> None:
    writer = Writer(suspends=True)
    committer = GroupCommitter(writer)
    caller = asyncio.current_task()
    for n in range(5):  # one after the other, each right after the last: no one to group with
        assert await committer.submit([message("q", n)]) == [f"stored-id-{n}"]
    assert writer.writes == [[f"id-{n}"] for n in range(5)]
    assert writer.tasks == [caller] * 5  # no hop through a flusher task


async def test_senders_whose_writes_return_without_a_turn_of_the_loop_are_still_grouped() -> None:
    # An engine that commits inline (SQLite, memory) returns a lone write without letting other
    # tasks run: a sender that wrote alone must not go on writing alone, or it would keep every
    # other sender out (each of 3 senders would write its 4 sends one by one).
    writer = Writer()  # returns at once, no turn of the loop
    committer = GroupCommitter(writer)

    async def sender(first: int) -> None:
        for n in range(first, first + 4):
            await committer.submit([message("q", n)])

    await asyncio.gather(*(sender(10 * s) for s in range(3)))
    assert sorted(i for write in writer.writes for i in write) == sorted(
        f"id-{10 * s + n}" for s in range(3) for n in range(4)
    )
    assert len(writer.writes) <= 6  # grouped: the first alone, then the three senders together


async def test_a_lone_sender_on_an_inline_engine_writes_from_its_own_task_and_lets_others_run() -> None:
    # An engine that commits inline returns without a turn of the loop: the next lone send gives
    # other tasks that turn itself (a bare yield), with no hop through a flusher task.
    writer = Writer()  # returns at once, no turn of the loop
    committer = GroupCommitter(writer)
    caller = asyncio.current_task()
    turns = 0

    async def other_task() -> None:
        nonlocal turns
        while True:
            turns += 1
            await asyncio.sleep(0)

    other = asyncio.create_task(other_task())
    await asyncio.sleep(0)
    started = turns
    for n in range(10):
        assert await committer.submit([message("q", n)]) == [f"stored-id-{n}"]
    other.cancel()
    assert writer.tasks == [caller] * 10
    assert turns - started >= 9  # a turn before each send after the first: no starving


async def test_sends_submitted_during_a_lone_senders_turn_are_written_with_it_in_one_group() -> None:
    writer = Writer()  # returns at once, no turn of the loop
    committer = GroupCommitter(writer)
    await committer.submit([message("q", 0)])  # written inline: the next lone send owes a turn
    # the first gives its turn, in which the two others are submitted
    sends = [committer.submit([message("q", n)]) for n in (1, 2, 3)]
    assert await asyncio.gather(*sends) == [["stored-id-1"], ["stored-id-2"], ["stored-id-3"]]
    assert writer.writes == [["id-0"], ["id-1", "id-2", "id-3"]]


async def test_requests_waiting_behind_a_sender_cancelled_during_its_turn_are_still_written() -> None:
    writer = Writer()  # returns at once, no turn of the loop
    committer = GroupCommitter(writer)
    await committer.submit([message("q", 0)])  # written inline: the next lone send owes a turn
    lone = asyncio.create_task(committer.submit([message("q", 1)]))
    waiting = asyncio.create_task(committer.submit([message("q", 2)]))
    await asyncio.sleep(0)  # `lone` gives its turn, `waiting` waits for it
    lone.cancel()
    with pytest.raises(asyncio.CancelledError):
        await lone
    assert await waiting == ["stored-id-2"]
    assert writer.writes == [["id-0"], ["id-2"]]


async def test_sends_right_after_a_grouped_write_are_grouped_not_written_one_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(group_commit, "QUIET_SECONDS", 60.0)  # "right after", however loaded the machine
    writer, committer, lone = await held_lone_write()
    waiting = [asyncio.create_task(committer.submit([message("q", n)])) for n in (1, 2)]
    await asyncio.sleep(0)
    writer.release.set()
    await asyncio.gather(lone, *waiting)
    # within QUIET_SECONDS of a write that had company: a busy stretch, so the flusher groups
    # this turn's sends (the first of them written alone would split the group in two)
    await asyncio.gather(*(committer.submit([message("q", n)]) for n in range(3, 6)))
    assert writer.writes == [["id-0"], ["id-1", "id-2"], ["id-3", "id-4", "id-5"]]


async def test_a_lone_sender_after_a_busy_stretch_writes_from_its_own_task_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(group_commit, "QUIET_SECONDS", 60.0)  # "right after", however loaded the machine
    writer, committer, lone = await held_lone_write(suspends=True)
    waiting = [asyncio.create_task(committer.submit([message("q", n)])) for n in (1, 2)]
    await asyncio.sleep(0)
    writer.release.set()
    await asyncio.gather(lone, *waiting)
    caller = asyncio.current_task()
    for n in range(3, 6):
        await committer.submit([message("q", n)])
    # the first goes through the flusher (right after a grouped write); it had no company, so
    # the next are the caller's own writes
    assert writer.writes == [["id-0"], ["id-1", "id-2"], ["id-3"], ["id-4"], ["id-5"]]
    assert writer.tasks[2] is not caller
    assert writer.tasks[3:] == [caller, caller]


async def test_a_bad_request_in_a_group_fails_only_its_caller() -> None:
    writer, committer, lone = await held_lone_write()
    good = asyncio.create_task(committer.submit([message("q", 1)]))
    bad = asyncio.create_task(committer.submit([message("missing", 2)]))
    await asyncio.sleep(0)
    writer.release.set()
    await asyncio.gather(lone, good)
    with pytest.raises(LookupError):
        await bad
    # the group failed as a whole, then each request was written on its own
    assert writer.writes == [["id-0"], ["id-1", "id-2"], ["id-1"], ["id-2"]]


async def test_requests_waiting_behind_a_failed_lone_write_are_still_written() -> None:
    writer, committer, lone = await held_lone_write("missing")
    waiting = asyncio.create_task(committer.submit([message("q", 1)]))
    await asyncio.sleep(0)
    writer.release.set()
    with pytest.raises(LookupError):
        await lone
    await waiting
    assert writer.writes == [["id-0"], ["id-1"]]


async def test_a_caller_that_gives_up_does_not_cancel_the_group_write() -> None:
    writer, committer, lone = await held_lone_write()
    impatient = asyncio.create_task(committer.submit([message("q", 1)]))
    patient = asyncio.create_task(committer.submit([message("q", 2)]))
    await asyncio.sleep(0)
    impatient.cancel()
    writer.release.set()
    await asyncio.gather(lone, patient)
    assert impatient.cancelled()
    assert writer.writes == [["id-0"], ["id-1", "id-2"]]


async def test_a_caller_that_gives_up_during_the_group_write_leaves_it_running() -> None:
    writer, committer, lone = await held_lone_write()
    impatient = asyncio.create_task(committer.submit([message("q", 1)]))
    patient = asyncio.create_task(committer.submit([message("q", 2)]))
    await asyncio.sleep(0)
    writer.release.set()  # lets the lone write finish (its waiter is woken) ...
    writer.release.clear()  # ... and holds the group write that follows
    await lone
    await asyncio.sleep(0.01)
    assert writer.writes == [["id-0"], ["id-1", "id-2"]]  # the group's write is under way, held
    impatient.cancel()
    await asyncio.sleep(0)
    assert not patient.done()
    writer.release.set()
    await patient
    assert impatient.cancelled()
    assert writer.writes == [["id-0"], ["id-1", "id-2"]]  # written once, not retried or split


async def test_requests_waiting_behind_a_cancelled_lone_write_are_still_written() -> None:
    # A lone send's caller that gives up interrupts only its own write (it never got an ack).
    writer, committer, lone = await held_lone_write()
    waiting = asyncio.create_task(committer.submit([message("q", 1)]))
    await asyncio.sleep(0)
    lone.cancel()
    with pytest.raises(asyncio.CancelledError):
        await lone
    writer.release.set()
    await waiting
    assert writer.writes == [["id-0"], ["id-1"]]


async def test_each_request_of_a_group_gets_the_ids_its_own_messages_were_stored_under() -> None:
    writer, committer, lone = await held_lone_write()
    one = asyncio.create_task(committer.submit([message("q", 1)]))
    two = asyncio.create_task(committer.submit([message("q", 2), message("q", 3)]))
    await asyncio.sleep(0)
    writer.release.set()
    assert list(await asyncio.gather(lone, one, two)) == [
        ["stored-id-0"],
        ["stored-id-1"],
        ["stored-id-2", "stored-id-3"],
    ]


async def test_an_unreachable_engine_fails_the_whole_group_without_writing_it_in_other_groupings() -> None:
    writer, committer, lone = await held_lone_write()
    down = asyncio.create_task(committer.submit([message("down", 1)]))
    other = asyncio.create_task(committer.submit([message("q", 2)]))
    await asyncio.sleep(0)
    writer.release.set()
    await lone
    for request in (down, other):
        with pytest.raises(BackendUnavailable):
            await request
    assert writer.writes == [["id-0"], ["id-1", "id-2"]]  # not split: it may have been stored
