"""Every scenario, in the order the table shows them."""

from __future__ import annotations

from reliability.scenarios import backlog, cluster, engine, http_pull, kills, poison, sqlite
from reliability.scenarios.base import Context, Scenario

SCENARIOS: list[Scenario] = [
    *kills.SCENARIOS,
    *engine.SCENARIOS,
    *cluster.SCENARIOS,
    *poison.SCENARIOS,
    *sqlite.SCENARIOS,
    *backlog.SCENARIOS,
    *http_pull.SCENARIOS,
]
BY_NAME = {scenario.name: scenario for scenario in SCENARIOS}


def select(spec: str | None) -> list[Scenario]:
    """Scenarios from a comma-separated list of names (default: all)."""
    if not spec:
        return list(SCENARIOS)
    chosen: list[Scenario] = []
    for name in (part.strip() for part in spec.split(",") if part.strip()):
        if name not in BY_NAME:
            raise ValueError(f"unknown scenario {name!r}; known: {', '.join(BY_NAME)}")
        chosen.append(BY_NAME[name])
    return chosen


__all__ = ["BY_NAME", "SCENARIOS", "Context", "Scenario", "select"]
