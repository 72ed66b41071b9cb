"""conveyor's fault harness (`python -m reliability`, `make reliability`): ledger-checked runs of
fault scenarios on every engine. See docs/reliability.md. The entry point is
`reliability.runner.main`; this package imports nothing, so the processes a run starts stay light."""
