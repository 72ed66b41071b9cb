"""The benchmark's smoke mode runs end to end and reports every case; speed is bench/'s business,
so nothing here is timed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import conveyor.bench as bench
from conveyor.bench.engines import ENGINES, backend_problem, service_problem
from conveyor.bench.report import CASE_NAMES

# every engine's cases end to end: ~2 minutes on a loaded 2-core machine, past the default timeout
pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

RAW_CASES = [name for name in CASE_NAMES if name.startswith("raw_")]
# the memory engine has neither a raw ceiling nor HTTP cases nor a producer in another process
# (another process has a memory engine of its own)
NOT_ON_MEMORY = RAW_CASES + [name for name in CASE_NAMES if name.startswith(("http_", "xprocess_"))]
# the window before a fill settled: Redis only (conveyor/bench/redis_settle.py)
ONLY_ON_REDIS = ["backlog_drain_large_unsettled"]


def runnable_engines() -> list[str]:
    """memory and SQLite always; PostgreSQL and Redis when their engine exists and the service is up."""
    return [
        name
        for name, engine in ENGINES.items()
        if service_problem(engine) is None and backend_problem(engine) is None
    ]


@pytest.mark.timeout(300)  # every engine, each with a producer process of its own (latency)
def test_smoke_run_reports_every_case_with_positive_figures(tmp_path: Path) -> None:
    engines = runnable_engines()
    output = tmp_path / "latest.json"

    assert bench.main(["--smoke", "--engines", ",".join(engines), "--output", str(output)]) == 0

    document = json.loads(output.read_text())
    assert document["mode"] == "smoke"
    assert list(document["engines"]) == engines
    for name, result in document["engines"].items():
        expected = [
            case
            for case in CASE_NAMES
            if (name != "memory" or case not in NOT_ON_MEMORY)
            and (name == "redis" or case not in ONLY_ON_REDIS)
        ]
        assert list(result["cases"]) == expected, (name, result["notes"])
        for case, figure in result["cases"].items():
            assert figure["value"] > 0, (name, case)
            assert all(sample > 0 for sample in figure["samples"]), (name, case)
    assert output.with_suffix(".md").read_text().startswith("| case |")


def test_unknown_engine_is_refused(tmp_path: Path) -> None:
    assert bench.main(["--smoke", "--engines", "sqlite,nosuch", "--output", str(tmp_path / "x.json")]) == 2
    assert not (tmp_path / "x.json").exists()
