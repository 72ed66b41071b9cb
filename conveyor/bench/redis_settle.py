"""Let a Redis fill settle before the large-backlog case measures it.

A hash or sorted set that grew past a power of two is rehashed into a table twice its size
one bucket per lookup: Redis rehashes its keyspace in the background but not the tables
inside a key. After a fill of 1,000,000 messages the first windows drained pay for moving
buckets (bench/README.md, "What limits each figure"). This looks up a missing member of each
large hash and sorted set under the run's prefix as many times as it has entries, which finishes
any rehash under way; the first window is measured before it, as the unsettled figure.
"""

from __future__ import annotations

from conveyor.bench.engines import REDIS_HOST, REDIS_PORT

# Lookups per script call (one call holds Redis for tens of milliseconds).
LOOKUPS_PER_CALL = 100_000
# Smaller keys are listpacks, with no table to rehash.
SMALLEST_TABLE = 1_000

_LOOKUP = """
local command = ARGV[1]
for _ = 1, tonumber(ARGV[2]) do
  redis.call(command, KEYS[1], '\\0settle')
end
return 0
"""


def settle(prefix: str) -> None:
    import redis  # the redis extra: only a run with a Redis engine gets here

    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT)
    try:
        lookup = client.register_script(_LOOKUP)
        for key in client.scan_iter(match=f"*{prefix}*", count=1_000):
            kind = client.type(key)
            if kind == b"hash":
                command, size = "HEXISTS", client.hlen(key)
            elif kind == b"zset":
                command, size = "ZSCORE", client.zcard(key)
            else:
                continue
            assert isinstance(size, int)  # a synchronous client answers at once
            if size < SMALLEST_TABLE:
                continue
            for start in range(0, size, LOOKUPS_PER_CALL):
                lookup(keys=[key], args=[command, min(LOOKUPS_PER_CALL, size - start)])
    finally:
        client.close()
