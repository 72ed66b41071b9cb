"""An app whose second consumer cannot start: its dead-letter queue does not exist and the app
does not create queues (`conveyor worker tests.reliability.start_up_app:app`)."""

from __future__ import annotations

import conveyor

app = conveyor.App(auto_create=False)


@app.consumer("healthy")
async def healthy(batch: conveyor.MessageBatch, env: conveyor.Env) -> None:
    pass


@app.consumer("orphan", dead_letter_queue="missing-dlq")
async def orphan(batch: conveyor.MessageBatch, env: conveyor.Env) -> None:
    pass
