"""Which queue holds another queue's dead letters, for views that only see queue names
(`conveyor top`, the dashboard): a declared consumer's `dead_letter_queue`, else `<queue>-dlq`."""

from __future__ import annotations

from collections.abc import Mapping

DLQ_SUFFIX = "-dlq"


def dead_letter_queues(names: list[str], declared: Mapping[str, str]) -> dict[str, str]:
    """queue -> its dead-letter queue, among the queues in `names`. `declared` (queue -> DLQ,
    from consumers) wins over the `<queue>-dlq` naming."""
    known = set(names)
    mapping = {name: name + DLQ_SUFFIX for name in names if name + DLQ_SUFFIX in known}
    mapping.update({queue: dlq for queue, dlq in declared.items() if queue in known and dlq in known})
    return mapping
