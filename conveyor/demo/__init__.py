"""The link-click pipeline, conveyor's flagship example (see docs/linkclicks.md).

A smart-link service redirects visitors and queues a LINK_CLICK event after each response; a
worker validates the events and bulk-inserts them; an analytics page shows what happened.
Run it with `conveyor dev [--once]`, `make demo` or `python -m conveyor.demo [--once]`.
"""
