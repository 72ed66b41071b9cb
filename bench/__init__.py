"""Benchmarks that live in the checkout only (the suite itself is conveyor/bench/, `conveyor bench`):
`python -m bench.events` (event bus and topic fan-out) and `python -m bench.redirect_latency` (the
demo's redirect with the background send on and off). See bench/README.md."""
