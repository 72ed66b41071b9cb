"""A local 3-node NATS JetStream cluster for the conformance suites (conveyor/bench/nats_servers.py
starts it): one for the whole session of a test process, started on first use, stopped by PID at
exit. Loopback ports of its own, its store in a temporary directory.

Streams are made with `replicas=3` (CLUSTER_REPLICAS): every record is on the three servers and a
read may be answered by a replica that has not stored it yet, the layout the engine must get right
on a real cluster; the partitions of a partitioned queue are streams whose leaders the cluster
places on different servers.
"""

from __future__ import annotations

import atexit
import tempfile
from pathlib import Path

from conveyor.bench.nats_servers import NatsCluster, nats_server_installed
from tests.support.services import need

CLUSTER_SIZE = 3
CLUSTER_REPLICAS = 3

__all__ = ["CLUSTER_REPLICAS", "check_nats_server", "shared_nats_cluster"]


def check_nats_server() -> None:
    need("nats-server", nats_server_installed(), "install nats-server (apt-get install nats-server)")


_shared: NatsCluster | None = None
_shared_directory: tempfile.TemporaryDirectory[str] | None = None


async def shared_nats_cluster() -> NatsCluster:
    """The session's cluster, started (and waited for) on first use, from the main thread: its
    servers get SIGTERM if the thread that started them ends (PR_SET_PDEATHSIG)."""
    global _shared, _shared_directory
    if _shared is None:
        check_nats_server()
        _shared_directory = tempfile.TemporaryDirectory(prefix="conveyor-nats-cluster-")
        cluster = NatsCluster(Path(_shared_directory.name), size=CLUSTER_SIZE)
        atexit.register(_stop_shared)
        _shared = cluster
        try:
            await cluster.start()
        except BaseException:
            _stop_shared()
            raise
    return _shared


def _stop_shared() -> None:
    global _shared, _shared_directory
    if _shared is not None:
        _shared.stop()
        _shared = None
    if _shared_directory is not None:
        _shared_directory.cleanup()
        _shared_directory = None
