# The two commands a newcomer needs: `make demo` runs the link-click demo on embedded SQLite,
# `make test` runs lint (ruff, import layers, private imports), type checks, the whole test suite and
# the documentation build. Both create .venv on first use. `make docs` builds the documentation site
# into site/.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck pytest docs bench bench-scaling reliability clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m conveyor.demo $(DEMO_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check conveyor tests examples bench scripts reliability
	$(BIN)/ruff format --check conveyor tests examples bench scripts reliability
	$(BIN)/lint-imports
	$(BIN)/python scripts/check_private_imports.py conveyor tests examples bench scripts reliability

typecheck: $(STAMP)
	$(BIN)/mypy

# Tests run on PYTEST_WORKERS processes (pytest-xdist); every test owns its queues, keys and files.
PYTEST_WORKERS ?= 4
pytest: $(STAMP)
	$(BIN)/python -m pytest -q -n $(PYTEST_WORKERS) $(PYTEST_ARGS)

# Warnings are errors (mkdocs.yml `strict`); nothing is fetched from the network.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

test: lint typecheck pytest docs

# Benchmarks (see bench/README.md): `make bench BENCH_ARGS="--quick --engines sqlite"`.
bench: $(STAMP)
	$(BIN)/python -m conveyor.bench --output bench/results/latest.json $(BENCH_ARGS)

# The scaling suite (bench/README.md, docs/scale.md): `make bench-scaling BENCH_ARGS="--quick"`.
bench-scaling: $(STAMP)
	$(BIN)/python -m conveyor.bench --scaling --output bench/results/latest-scaling.json $(BENCH_ARGS)

# The fault harness (see docs/reliability.md): `make reliability RELIABILITY_ARGS="--quick --engines sqlite"`.
reliability: $(STAMP)
	$(BIN)/python -m reliability $(RELIABILITY_ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache site
