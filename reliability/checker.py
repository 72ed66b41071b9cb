"""The checker: from a run's ledger and what its queues hold at the end, the figures of one row of
the table and the rules it breaks.

Rules (docs/reliability.md):
1. lost = 0: every message whose send was acknowledged was completed by a handler or is in the
   dead-letter queue (a scenario on a documented non-durable setting is exempt).
2. unexplained duplicates = 0 (see `explain`).
3. every poison message is in the dead-letter queue with its error, and no innocent one is;
   a poison was delivered to a handler at most max_retries + 1 times.
4. no error that is not a conveyor error reached a producer, and no send reported failed was
   stored (today's docs call only a cancelled send ambiguous; see roles/producer.py).
"""

from __future__ import annotations

import itertools
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from reliability.ledger import Completion, Event, Ledger

# The longest a healthy worker takes from a handler's return to its outcome being durable: the
# settle's 5 tries span about 1.5 s, plus settles queued ahead of it and slow commits. A worker
# death, stall or engine fault within this window of a completion may have undone its ack.
ACK_WINDOW_SECONDS = 10.0
# The violation of a send that raised and was stored anyway (issue 26 item 6).
FAILED_BUT_STORED = "messages whose send raised an error were stored and delivered"
# Events that are faults: recovery is measured from each of them, and from every exit that was
# not a graceful stop (a poison's os._exit, a crash).
FAULT_EVENTS = ("kill", "engine_fault", "fault")


@dataclass(frozen=True)
class DeadLetterSeen:
    key: str
    error: str
    attempts: int


@dataclass
class FinalState:
    """What the queues held once the drain was over."""

    dead_letters: list[DeadLetterSeen]
    #: keys of the messages still in the queue (leased or not), and how many there were in all
    left: list[str]
    left_total: int


@dataclass
class Expectations:
    max_retries: int
    visibility_timeout: float
    #: keys of the poison messages the producers were told to send
    poison: set[str] = field(default_factory=set)
    #: a documented non-durable setting: lost messages are allowed
    durable: bool = True


@dataclass
class Figures:
    sent_ok: int = 0
    unknown: int = 0
    failed: int = 0
    completed: int = 0
    lost: int = 0
    left: int = 0
    explained: int = 0
    unexplained: int = 0
    in_dlq: int = 0
    recovery_seconds: float | None = None
    poison: int = 0
    poison_in_dlq: int = 0
    innocent_in_dlq: int = 0
    max_poison_deliveries: int = 0
    max_attempts: int = 0
    failed_but_stored: int = 0
    foreign_errors: int = 0

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class Verdict:
    figures: Figures
    violations: list[str]
    notes: list[str]

    @property
    def passed(self) -> bool:
        return not self.violations


class Explainer:
    """Decides whether a second completion of a message is explained by a fault the ledger holds."""

    def __init__(self, ledger: Ledger, visibility_timeout: float) -> None:
        self.visibility_timeout = visibility_timeout
        self.deaths: dict[int, float] = {
            e.pid: e.at for e in ledger.events if e.kind == "exit" and not e.clean and e.pid is not None
        }
        self.stalls: dict[int, list[tuple[float, float]]] = defaultdict(list)
        for pid, start, end in ledger.stalls:
            self.stalls[pid].append((start, end))
        self.engine_faults = _fault_windows(ledger.events)

    def explain(self, first: Completion, second: Completion) -> str | None:
        """Why `second` may rightly repeat `first`, or None when nothing does.

        `first`'s outcome may not have become durable when, in the window from ACK_WINDOW_SECONDS
        before its batch started to ACK_WINDOW_SECONDS after it was recorded:
        - the process that completed it died without a clean stop (SIGKILL, exit, crash);
        - that process's event loop stalled for half the visibility timeout or more (its lease
          may have expired unrenewed);
        - the engine was down or failing (a crash, a full disk).
        The second delivery must also be a later one (more attempts), unless the engine failed:
        a crashed server may forget the latest leases, uncounted.
        """
        if first.id != second.id:
            return None  # one body stored under two ids: nothing in conveyor may do that
        low, high = first.started - ACK_WINDOW_SECONDS, first.at + ACK_WINDOW_SECONDS
        engine_fault = any(start <= high and end >= low for start, end in self.engine_faults)
        if second.attempts <= first.attempts and not engine_fault:
            return None
        death = self.deaths.get(first.pid)
        if death is not None and first.at <= death <= min(high, second.at):
            return "worker died"
        if any(start <= high and end >= low for start, end in self.stalls.get(first.pid, ())):
            return "event loop stalled"
        if engine_fault:
            return "engine fault"
        return None


def _fault_windows(events: list[Event]) -> list[tuple[float, float]]:
    windows: list[tuple[float, float]] = []
    open_since: float | None = None
    for event in events:
        if event.kind == "engine_fault" and open_since is None:
            open_since = event.at
        elif event.kind == "engine_recovered" and open_since is not None:
            windows.append((open_since, event.at))
            open_since = None
    if open_since is not None:
        windows.append((open_since, float("inf")))
    return windows


def check(ledger: Ledger, final: FinalState, expect: Expectations) -> Verdict:
    figures = Figures()
    violations: list[str] = []
    notes: list[str] = []
    sends = ledger.sends
    figures.sent_ok = len(sends.ok)
    figures.unknown = len(sends.unknown)
    figures.failed = len(sends.failed)

    by_key: dict[str, list[Completion]] = defaultdict(list)
    for completion in ledger.completions:
        by_key[completion.key].append(completion)
    figures.completed = len(by_key)
    figures.max_attempts = max((c.attempts for c in ledger.completions), default=0)

    dead = {letter.key: letter for letter in final.dead_letters}
    figures.in_dlq = len(dead)
    left = set(final.left)
    figures.left = final.left_total
    lost = [key for key in sends.ok if key not in by_key and key not in dead]
    figures.lost = len(lost)
    if lost:
        still = sum(1 for key in lost if key in left)
        message = (
            f"{len(lost)} acknowledged messages neither completed nor dead-lettered ({still} still queued)"
        )
        (violations if expect.durable else notes).append(
            message + ("" if expect.durable else ": non-durable")
        )

    explainer = Explainer(ledger, expect.visibility_timeout)
    reasons: Counter[str] = Counter()
    unexplained_examples: list[str] = []
    for key, completions in by_key.items():
        for first, second in itertools.pairwise(completions):
            reason = explainer.explain(first, second)
            if reason is None:
                figures.unexplained += 1
                if len(unexplained_examples) < 3:
                    unexplained_examples.append(f"{key} (attempts {first.attempts}->{second.attempts})")
            else:
                figures.explained += 1
                reasons[reason] += 1
    if figures.unexplained:
        violations.append(
            f"{figures.unexplained} unexplained duplicate completions, e.g. {', '.join(unexplained_examples)}"
        )
    if reasons:
        notes.append(
            "duplicates explained by " + ", ".join(f"{why} ({n})" for why, n in reasons.most_common())
        )

    _check_poison(ledger, dead, expect, figures, violations, notes)
    stored = [key for key in sends.failed if key in by_key or key in dead or key in left]
    figures.failed_but_stored = len(stored)
    if stored:
        violations.append(f"{len(stored)} {FAILED_BUT_STORED}")
    delivered_unknown = sum(1 for key in sends.unknown if key in by_key or key in dead)
    if sends.unknown:
        notes.append(f"{delivered_unknown} of {len(sends.unknown)} unknown sends were stored")
    figures.foreign_errors = len(sends.foreign_errors)
    if sends.foreign_errors:
        kinds = Counter(kind for kind, _ in sends.foreign_errors)
        violations.append(
            "producers got errors that are not conveyor errors: "
            + ", ".join(f"{kind} x{n}" for kind, n in kinds.most_common())
        )
    figures.recovery_seconds = _recovery(ledger, notes)
    return Verdict(figures, violations, notes)


def _check_poison(
    ledger: Ledger,
    dead: dict[str, DeadLetterSeen],
    expect: Expectations,
    figures: Figures,
    violations: list[str],
    notes: list[str],
) -> None:
    poison = {key for key in expect.poison if key in ledger.sends.ok}
    figures.poison = len(poison)
    deliveries = Counter(record["key"] for record in ledger.poison_deliveries)
    figures.max_poison_deliveries = max(deliveries.values(), default=0)
    with_error = [key for key in poison if key in dead and dead[key].error.strip()]
    figures.poison_in_dlq = len(with_error)
    innocent = [key for key in dead if key not in expect.poison]
    figures.innocent_in_dlq = len(innocent)
    if len(with_error) < len(poison):
        violations.append(
            f"{len(poison) - len(with_error)} of {len(poison)} poison messages not dead-lettered"
        )
    if innocent:
        violations.append(f"{len(innocent)} innocent messages dead-lettered")
    bound = expect.max_retries + 1
    over = {key: n for key, n in deliveries.items() if n > bound}
    if over:
        worst = max(over.values())
        violations.append(
            f"{len(over)} poison messages delivered more than max_retries + 1 = {bound} times (up to {worst})"
        )
    for key in with_error:
        notes.append(
            f"poison {key}: dead-lettered after {deliveries.get(key, 0)} deliveries: {dead[key].error[:120]}"
        )


def _recovery(ledger: Ledger, notes: list[str]) -> float | None:
    """The longest time from a fault to the first completion of a batch that started after it:
    new work, not a batch that was running anyway (None: no fault)."""
    faults = [
        event
        for event in ledger.events
        if event.kind in FAULT_EVENTS or (event.kind == "exit" and not event.clean and event.role == "worker")
    ]
    if not faults:
        return None
    worst = 0.0
    unanswered = 0
    for fault in faults:
        after = [c.at for c in ledger.completions if c.started > fault.at]
        if not after:
            unanswered += 1
            continue
        worst = max(worst, min(after) - fault.at)
    if unanswered:
        notes.append(f"{unanswered} of {len(faults)} faults had no completion after them")
    return round(worst, 2)
