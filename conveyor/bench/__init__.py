"""conveyor's benchmarks: every figure next to the raw ceiling of its engine, measured in the same run.

Run `conveyor bench [--smoke | --quick] [--engines sqlite,postgres,...]` (or `python -m
conveyor.bench`, or `make bench` in a checkout). Method and figures: bench/README.md in the
repository. Needs `pip install 'conveyor[all]'` (the engines' drivers and psutil).
"""

from conveyor.bench.runner import main

__all__ = ["main"]
