"""Per-type counters of a Router, cumulative for the process, ready to be exported as metrics."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

#: the label counting invalid bodies whose type could not be told (bad JSON, unknown or missing tag)
UNKNOWN_TYPE = "(unknown)"


@dataclass(slots=True)
class TypeCounters:
    """What happened to the deliveries of one event type (a retried event counts once per delivery).

    `validated`: bodies that passed the schema; `invalid`: bodies that did not (dead-lettered or
    dropped, never retried); `handled`: events whose handler returned; `failed`: events whose
    handler raised (retried); `unhandled`: valid events of a type with no handler.
    """

    validated: int = 0
    invalid: int = 0
    handled: int = 0
    failed: int = 0
    unhandled: int = 0

    def __iadd__(self, other: TypeCounters) -> TypeCounters:
        for field in dataclasses.fields(self):
            setattr(self, field.name, getattr(self, field.name) + getattr(other, field.name))
        return self


class RouterStats:
    """`router.stats["LINK_CLICK"].handled`; `router.stats.total`; `router.stats.by_type()`."""

    def __init__(self) -> None:
        self._by_type: dict[str, TypeCounters] = {}

    def __getitem__(self, label: str) -> TypeCounters:
        """The counters of one type (zeros for a type not seen yet)."""
        return self._by_type.get(label) or TypeCounters()

    def __repr__(self) -> str:
        return f"RouterStats({self._by_type!r})"

    def counter(self, label: str) -> TypeCounters:
        """The live counters of `label`, created on first use (for the Router to increment)."""
        counters = self._by_type.get(label)
        if counters is None:
            counters = self._by_type[label] = TypeCounters()
        return counters

    def by_type(self) -> dict[str, TypeCounters]:
        """A snapshot: type label -> a copy of its counters."""
        return {label: dataclasses.replace(c) for label, c in self._by_type.items()}

    @property
    def total(self) -> TypeCounters:
        """Every type's counters added up."""
        total = TypeCounters()
        for counters in self._by_type.values():
            total += counters
        return total
