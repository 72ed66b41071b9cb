"""/metrics: the API's own requests by route template and status, the process, the build."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

import conveyor
from tests.http.conftest import client_for, result


def families(exposition: str) -> dict[str, list[tuple[dict[str, str], float, str]]]:
    """family name -> its samples as (labels, value, sample name)."""
    return {
        family.name: [(sample.labels, sample.value, sample.name) for sample in family.samples]
        for family in text_string_to_metric_families(exposition)
    }


def requests(exposition: str, route: str, status: str, method: str = "POST") -> float:
    wanted = {"method": method, "route": route, "status": status}
    found = families(exposition).get("conveyor_http_requests", [])
    return sum(value for labels, value, _ in found if labels == wanted)


async def test_requests_are_counted_by_route_template_and_status(sqlite_app: conveyor.App) -> None:
    await sqlite_app.create_queue("jobs")
    async with client_for(sqlite_app) as client:
        for _ in range(3):
            result(await client.post("/queues/jobs/messages", json={"body": 1}))
        await client.post("/queues/nowhere/messages", json={"body": 1})  # 404: no such queue
        await client.get("/no/such/route/42")
        await client.post("/queues/jobs/messages", json={"body": 1}, headers={"Authorization": "Bearer x"})
        text = (await client.get("/metrics")).text
    template = "/queues/{name}/messages"
    assert requests(text, template, "200") == 3
    assert requests(text, template, "404") == 1
    assert requests(text, template, "401") == 1  # refused before the route ran, still counted
    assert requests(text, "<unmatched>", "404", method="GET") == 1
    assert "/queues/jobs/messages" not in text and "/no/such/route" not in text  # no label per path
    durations = families(text)["conveyor_http_request_duration_seconds"]
    counts = [
        value
        for labels, value, name in durations
        if name.endswith("_count") and labels == {"method": "POST", "route": template, "status": "200"}
    ]
    assert counts == [3]


async def test_metrics_have_no_created_series_and_show_the_process_and_build(
    sqlite_app: conveyor.App,
) -> None:
    await sqlite_app.create_queue("jobs")
    async with client_for(sqlite_app) as client:
        result(await client.post("/queues/jobs/messages", json={"body": 1}))
        text = (await client.get("/metrics")).text
    assert "_created" not in text
    found = families(text)
    assert found["conveyor_build_info"][0][0]["version"] == conveyor.__version__
    assert found["process_resident_memory_bytes"][0][1] > 0
    assert "python_info" in found
