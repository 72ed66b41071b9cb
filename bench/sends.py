"""The send rows alone, next to the raw client and the Python peers' one-by-one sends.

python -m bench.sends [--engines redis,postgres,nats,sqlite] [--count 3000] [--repeats 3]
                      [--peers-python /path/to/venv/bin/python]

Per engine and repeat, in one process and alternating: the raw client's one-by-one insert
(`conveyor/bench/raw.py`, the very code of `conveyor bench`) and, on Redis and PostgreSQL, the
same insert from the asyncio client (what an event loop's round trip costs); conveyor's `send`
one by one and from 100 concurrent tasks (`conveyor/bench/conveyor_cases.py`); and, with
`--peers-python` (a Python whose venv has the peers: `pip install huey 'dramatiq[redis]'
'faststream[redis]' saq rq pgqueuer procrastinate`, apart from conveyor's, whose pins they clash
with), every peer of that engine (`bench/peer_send.py`, a process each; Huey on SQLite too).
Prints medians: a quicker, larger sample of the send rows than a whole `conveyor bench --quick`
(whose one-by-one case sends 500).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import statistics
import subprocess
import sys
from pathlib import Path

from conveyor.bench import conveyor_cases as cases
from conveyor.bench import raw
from conveyor.bench.engines import select, service_problem, storage, unique
from conveyor.bench.modes import BULK, QUICK

PEER_SCRIPT = Path(__file__).with_name("peer_send.py")
# the peers of each engine (bench/peer_send.py's PEERS)
PEERS = {
    "redis": ("huey", "dramatiq", "faststream", "saq", "rq"),
    "postgres": ("pgqueuer", "procrastinate"),
    "sqlite-full": ("huey-sqlite-full",),
    "sqlite-normal": ("huey-sqlite-normal",),
}
CONCURRENT = 5_000


def peer_rate(python: str, peer: str, count: int, name: str) -> float:
    reply = subprocess.run(
        [python, str(PEER_SCRIPT), peer, str(count), name],
        check=True,
        capture_output=True,
        text=True,
        timeout=600,
    )
    return float(json.loads(reply.stdout.strip().splitlines()[-1])["rate"])


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.sends", description=__doc__.split("\n")[0])
    parser.add_argument("--engines", default="redis,postgres,nats,sqlite")
    parser.add_argument("--count", type=int, default=3_000, help="messages sent one by one per case")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--peers-python", default=None, help="a Python with the peers installed")
    parser.add_argument("--no-concurrent", action="store_true", help="leave out 100 concurrent tasks")
    args = parser.parse_args()
    # the raw ceiling's one-by-one case at this size; its batch and drain cases at their smallest
    mode = dataclasses.replace(QUICK, one_by_one=args.count, batched=BULK, drained=BULK)
    table: dict[str, dict[str, list[float]]] = {}
    for engine in select(args.engines):
        problem = service_problem(engine)
        if problem is not None:
            print(f"{engine.name}: skipped: {problem}", file=sys.stderr)
            continue
        samples = table.setdefault(engine.name, {})
        with storage(engine) as place:
            url = place.conveyor_url()
            for repeat in range(args.repeats):
                print(f"{engine.name}: repeat {repeat + 1}/{args.repeats}", file=sys.stderr)
                figures = {"raw one by one": raw.measure(place, mode)[raw.INSERT_ONE]}
                async_rate = asyncio.run(raw.async_insert_one(place, args.count))
                if async_rate is not None:
                    figures["raw asyncio one by one"] = async_rate
                figures["conveyor send one by one"] = asyncio.run(
                    cases.send_one(url, place.queue_name("one"), args.count)
                )
                if not args.no_concurrent:
                    figures["conveyor send, 100 tasks"] = asyncio.run(
                        cases.send_concurrent(url, place.queue_name("concurrent"), CONCURRENT)
                    )
                if args.peers_python:
                    for peer in PEERS.get(engine.name, ()):
                        # Huey on SQLite takes a database file of the run's own; the others a name
                        name = str(place.directory / "huey.db") if engine.kind == "sqlite" else unique("peer")
                        figures[f"{peer} one by one"] = peer_rate(args.peers_python, peer, args.count, name)
                for case, rate in figures.items():
                    samples.setdefault(case, []).append(rate)
    for name, samples in table.items():
        ceiling = statistics.median(samples["raw one by one"])
        print(f"\n{name} (median of {args.repeats}, {args.count} one by one)")
        for case, rates in samples.items():
            rate = statistics.median(rates)
            print(f"  {case:<28} {rate:>9,.0f}/s  {rate / ceiling:5.2f}x raw   {[round(r) for r in rates]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
