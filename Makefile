# Each target creates the virtual environment it needs (.venv) from pyproject.toml, pinned by
# constraints.txt, so a fresh clone needs nothing but Python 3.11+.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test lint bench bench-ingest constraints clean

$(BIN)/lifeline: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	touch $@

## run: the service on the embedded default (SQLite, in-process broker) at 127.0.0.1:8000
run: $(BIN)/lifeline
	$(BIN)/lifeline serve

## test: lint, type checks and the whole test suite
test: lint
	$(BIN)/pytest

lint: $(BIN)/lifeline
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

## bench: the ingestion benchmark (PostgreSQL + Redis + a real worker)
bench: bench-ingest
bench-ingest: $(BIN)/lifeline
	$(BIN)/python bench/ingest.py

## constraints: re-pin every dependency after changing pyproject.toml
constraints: $(BIN)/lifeline
	$(BIN)/pip freeze --exclude-editable | grep -v '^lifeline' > constraints.txt

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
