# Two entry points, both doing their own set-up on a fresh machine:
#   make demo   - runs the demo on embedded defaults (SQLite, no server)
#   make test   - the whole matrix with nox: every Python/Django lane, lint, mypy, docs, package
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# nox arguments, e.g. make test NOX='-s tests-3.12'
NOX ?=

.PHONY: demo test bench lint

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.demo: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[django,otel,huey,structlog,celery]'
	touch $@

# Every extra plus the dev dependency group (pip >= 25.1 for --group, PEP 735).
$(VENV)/.dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[all]' --group dev
	touch $@ $(VENV)/.demo

$(VENV)/.nox: | $(BIN)/python
	$(BIN)/pip install -q 'nox>=2025.2' 'uv>=0.6'
	touch $@

demo: $(VENV)/.demo
	$(BIN)/python -m demo $(ARGS)

# The matrix (noxfile.py): each lane runs the whole suite on PostgreSQL, and the 3.11
# lane the Django tests again on SQLite (what a user without a database server has). The
# checks that need no service (lint, mypy, docs, package) run beside the lanes, which
# mostly wait on brokers and workers; their log follows. NOX='...' runs what it says.
CHECKS := lint mypy docs package
test: $(VENV)/.nox
ifeq ($(NOX),)
	@$(BIN)/python -m nox -s $(CHECKS) > $(VENV)/nox-checks.log 2>&1 & checks=$$!; \
	$(BIN)/python -m nox -s tests; lanes=$$?; \
	wait $$checks; checks=$$?; cat $(VENV)/nox-checks.log; \
	echo "make test: lanes exit $$lanes, checks ($(CHECKS)) exit $$checks"; \
	test $$lanes -eq 0 && test $$checks -eq 0
else
	$(BIN)/python -m nox $(NOX)
endif

bench: $(VENV)/.dev
	$(BIN)/python -m bench

lint: $(VENV)/.dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy --strict src
