"""Benchmarks that live in the checkout only (the suite itself is conveyor/bench/, `conveyor bench`):
`python -m bench.events` (event bus and topic fan-out), `python -m bench.redirect_latency` (the
demo's redirect with the background send on and off) and `python -m bench.nats_memory` (a NATS
worker's memory with idle queues and at a 1,000,000-message backlog). See bench/README.md."""
