# Two commands on a fresh machine: `make run` and `make test`. Each creates .venv and installs
# what it needs on first use (and again whenever pyproject.toml changes).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Debian's chromium drives the browser tests (Playwright cannot download its own browser here).
CHROMIUM := /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_INSTALL := DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q chromium > /dev/null

.PHONY: run test lint typecheck pytest bench clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "Python 3.11+ is required")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

## Serve the reference gateway on 127.0.0.1:18789 (OPENCLAW_GATEWAY_PORT) with the JSON store.
run: $(STAMP)
	$(BIN)/python gateway.py

## Lint, format check, type check, then the whole test suite.
test: lint typecheck pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP) $(CHROMIUM)
	$(BIN)/pytest -q

$(CHROMIUM):
	@echo "Installing Debian's chromium for the browser tests"
	$(APT_INSTALL) || { $(SUDO) apt-get update -q > /dev/null && $(APT_INSTALL); }

## Benchmarks (bench/): intake with auth and charge vs a bare endpoint, per backend, store size
## and worker count (closed loop, and open loop at fixed rates), intake + outcome pairs (reserve
## then settle), the authenticated job list, and the operator's reads at 100,000 clients; writes
## BENCHMARKS.md with a Goals table (about 25 minutes; needs PostgreSQL on 127.0.0.1). A part:
## .venv/bin/python bench/run.py --only open (one row: add --clients N --workers N)
bench: $(STAMP)
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache *.egg-info
