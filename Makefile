# Two entry points, both doing their own set-up on a fresh machine:
#   make demo   - runs the demo on embedded defaults (SQLite, no server)
#   make test   - installs every extra and runs the whole test suite
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test bench lint

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.demo: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[django,otel]'
	touch $@

$(VENV)/.dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[all]' --group dev  # pip >= 25.1 for --group (PEP 735)
	touch $@ $(VENV)/.demo

demo: $(VENV)/.demo
	$(BIN)/python -m demo

# The whole suite on PostgreSQL, then the Django tests again on SQLite (what a user
# without a database server has).
test: $(VENV)/.dev
	$(BIN)/python -m pytest
	AIRLOCK_TEST_DB=sqlite $(BIN)/python -m pytest -q tests/test_django_*.py

bench: $(VENV)/.dev
	$(BIN)/python -m bench

lint: $(VENV)/.dev
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy
