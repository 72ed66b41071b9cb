"""`conveyor worker --metrics-port` in process: the banner names the endpoint; without
prometheus-client the option is one line naming the extra. (A scrape of a worker process:
tests/metrics/test_worker_process.py.)"""

from __future__ import annotations

import re
import subprocess
import sys
import uuid
from pathlib import Path

from tests.cli.conftest import Cli
from tests.cli.test_worker import APP_MODULE, send_all, write_handlers


def test_the_banner_names_the_metrics_endpoint(cli: Cli, tmp_path: Path) -> None:
    handlers = write_handlers(tmp_path)
    module = f"app_{uuid.uuid4().hex}"
    (tmp_path / f"{module}.py").write_text(APP_MODULE.format(handlers=handlers))
    cli.ok("queues", "create", "jobs")
    send_all(cli, "jobs", ["stop"])
    result = cli("worker", f"{module}:app", "--metrics-port", "0")
    assert result.exit_code == 0, result.output
    assert re.search(r" · metrics http://127\.0\.0\.1:\d+/metrics · Ctrl-C or SIGTERM stops", result.stdout)


WITHOUT_PROMETHEUS = """
import sys

sys.modules["prometheus_client"] = None  # as if the extra were not installed
import conveyor

try:
    conveyor.App("memory://").metrics
except conveyor.MissingDependency as exc:
    print(exc)
"""


def test_without_prometheus_client_metrics_name_the_extra() -> None:
    result = subprocess.run(
        [sys.executable, "-c", WITHOUT_PROMETHEUS], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.startswith(
        "worker metrics need prometheus-client: pip install 'conveyor[metrics]'"
    ), result.stderr
