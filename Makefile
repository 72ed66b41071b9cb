# The two commands a newcomer needs: `make demo` runs the link-click demo on embedded SQLite,
# `make test` runs lint, type checks and the whole test suite. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck pytest bench reliability clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m examples.linkclicks $(DEMO_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check conveyor tests examples bench reliability
	$(BIN)/ruff format --check conveyor tests examples bench reliability

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

test: lint typecheck pytest

# Benchmarks (see bench/README.md): `make bench BENCH_ARGS="--quick --engines sqlite"`.
bench: $(STAMP)
	$(BIN)/python -m bench $(BENCH_ARGS)

# The fault harness (see docs/reliability.md): `make reliability RELIABILITY_ARGS="--quick --engines sqlite"`.
reliability: $(STAMP)
	$(BIN)/python -m reliability $(RELIABILITY_ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
