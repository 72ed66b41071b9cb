"""Send and consume on embedded SQLite: the smallest complete conveyor program.

Run it from a checkout with `.venv/bin/python examples/quickstart.py`: it sends four greetings to a
SQLite file in a temporary folder, handles them with `conveyor.testing.drain`, and shows the one
that failed every attempt in the dead-letter queue.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

import conveyor
from conveyor.testing import drain


async def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        app = conveyor.App(f"sqlite:///{Path(folder) / 'quickstart.db'}")
        handled: list[str] = []

        @app.consumer("greetings", max_batch_size=10, max_retries=2, dead_letter_queue="greetings-dlq")
        async def greet(batch: conveyor.MessageBatch, env: conveyor.Env) -> None:
            for message in batch.messages:
                if message.body["name"] == "nobody":
                    message.retry()  # fails every time: dead-lettered after max_retries
                    continue
                handled.append(f"hello, {message.body['name']} (attempt {message.attempts})")

        async with app:
            greetings = app.queue("greetings")
            await greetings.send({"name": "Ada"})
            await greetings.send_batch([{"name": name} for name in ("Grace", "Linus", "nobody")])
            print("sent 4 messages:", await greetings.stats())
            await drain(app)
            print("\n".join(handled))
            dead = await app.queue("greetings-dlq").peek()
            for letter in dead:
                assert letter.dead_letter is not None
                print(f"dead letter {letter.body} after {letter.dead_letter.attempts} attempts")


if __name__ == "__main__":
    asyncio.run(main())
