"""Benchmarks that live in the checkout only (the suite itself is conveyor/bench/, `conveyor bench`):
`python -m bench.events` (event bus and topic fan-out), `python -m bench.redirect_latency` (the
demo's redirect with the background send on and off), `python -m bench.nats_memory` (a NATS
worker's memory with idle queues and at a 1,000,000-message backlog) and `python -m bench.sends`
(the send rows alone, with the Python peers' one-by-one sends beside them). See bench/README.md."""
