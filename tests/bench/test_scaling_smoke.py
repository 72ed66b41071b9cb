"""The scaling suite (`conveyor bench --scaling`) runs end to end on SQLite and on server engines
in seconds; speed is bench/'s business, so nothing here is timed."""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

import pytest

import conveyor
import conveyor.bench as bench
from conveyor.bench.scaling_targets import TARGETS, target_problem
from tests.support.services import need

# worker processes started for every point: slow on a loaded machine, so a timeout of its own
pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

# SQLite runs in the workers; the others are server engines whose side the meter reads
SMOKE_TARGETS = ["sqlite", "postgres", "redis-cluster-1"]


def runnable(names: list[str]) -> list[str]:
    for name in names:
        problem = target_problem(TARGETS[name])
        need(name, problem is None, problem or "")
    return names


def run(tmp_path: Path, *args: str) -> dict[str, Any]:
    output = tmp_path / "scaling.json"
    assert bench.main(["--scaling", "--smoke", "--output", str(output), *args]) == 0
    document: dict[str, Any] = json.loads(output.read_text())
    assert output.with_suffix(".md").read_text().startswith("| target |")
    return document


def test_scaling_smoke_measures_every_case_and_process_count_with_both_sides_cost(tmp_path: Path) -> None:
    targets = runnable(SMOKE_TARGETS)

    document = run(tmp_path, "--engines", ",".join(targets))

    assert document["suite"] == "scaling"
    assert list(document["targets"]) == targets
    for name, result in document["targets"].items():
        points = {(point["case"], point["processes"]) for point in result["points"]}
        assert points == {(case, n) for case in ("drain", "produce") for n in (1, 2)}, (name, result["notes"])
        for point in result["points"]:
            for sample in point["samples"]:
                assert sample["rate"] > 0, (name, point)
                assert "client_cpu_us_per_msg" in sample, (name, point)
                # the engine's own processes are metered on server engines only
                assert ("engine_cpu_us_per_msg" in sample) == (name != "sqlite"), (name, point)
        if name.startswith("redis"):
            drains = [p for p in result["points"] if p["case"] == "drain"]
            assert all(s["engine_calls_per_msg"] > 0 for p in drains for s in p["samples"])


def test_partition_counts_run_only_when_create_queue_takes_partitions(tmp_path: Path) -> None:
    runnable(["sqlite"])
    partitioned = "partitions" in inspect.signature(conveyor.App.create_queue).parameters

    document = run(tmp_path, "--engines", "sqlite", "--processes", "1", "--partitions", "1,8")

    result = document["targets"]["sqlite"]
    counts = {point["partitions"] for point in result["points"]}
    if partitioned:
        assert counts == {1, 8}, result["notes"]
    else:
        assert counts == {1}
        assert any("partitions=8" in note for note in result["notes"])


def test_unknown_scaling_target_and_bad_counts_are_refused(tmp_path: Path) -> None:
    output = tmp_path / "x.json"
    assert bench.main(["--scaling", "--smoke", "--engines", "sqlite,nosuch", "--output", str(output)]) == 2
    assert bench.main(["--scaling", "--smoke", "--processes", "0", "--output", str(output)]) == 2
    assert not output.exists()
