"""conveyor's benchmarks: every figure next to the raw ceiling of its engine, measured in the same run.

Run `python -m bench [--smoke | --quick] [--engines sqlite,postgres,...]` (or `make bench`); the
CLI's `conveyor bench` calls `bench.main(argv)`. See bench/README.md.
"""

from bench.runner import main

__all__ = ["main"]
