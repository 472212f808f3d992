# The single entry point for people and CI. Every target installs what it needs first.
SHELL := /bin/bash
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
HOST ?= 127.0.0.1
PORT ?= 8080
DEV_SECRET := dev-secret-for-local-use-only

.PHONY: install run test lint format replay clean bench fuzz test-fresh

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || python3 -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $@

install: $(STAMP)

# Ingress and one worker in the foreground against local Redis and PostgreSQL; Ctrl-C stops both.
run: $(STAMP)
	@if [ -z "$$SMSC_SECRET" ]; then \
	  echo "SMSC_SECRET is not set: using the development secret '$(DEV_SECRET)'. For local use only."; \
	fi
	@export SMSC_SECRET="$${SMSC_SECRET:-$(DEV_SECRET)}"; \
	$(BIN)/smsc-ingest migrate || exit 1; \
	$(BIN)/smsc-ingest worker & worker=$$!; \
	trap 'kill -TERM $$worker 2>/dev/null; wait $$worker' EXIT; \
	$(BIN)/smsc-ingest serve --host $(HOST) --port $(PORT)

test: $(STAMP)
	$(BIN)/pytest

# Both commands above on a machine where no server answers, from a fresh clone of HEAD in a network
# namespace of its own (see tests/fresh/run.sh and the README's "Development"). Needs root.
test-fresh:
	tests/fresh/run.sh

# The property tests with FUZZ_SCALE times their examples (about 10 minutes at 20): make fuzz FUZZ_SCALE=100
FUZZ_SCALE ?= 20
fuzz: $(STAMP)
	FUZZ_SCALE=$(FUZZ_SCALE) $(BIN)/pytest -o timeout=0 -q -p no:logging --hypothesis-show-statistics \
	  tests/unit/test_properties.py tests/integration/test_properties_ingress.py \
	  tests/integration/test_properties_pipeline.py

# Requeue dead letters after a fix: make replay ARGS="--reason charset --dry-run" (see smsc-ingest replay -h).
replay: $(STAMP)
	$(BIN)/smsc-ingest replay $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy smsc ingress workers cli

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis *.egg-info

# About 3 minutes: ingress, workers and end-to-end figures against references (see bench/README.md);
# writes bench-results/latest.json. Uses the database smsc_bench and Redis database 14 only.
bench: $(STAMP)
	@command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }
	@$(BIN)/python -c 'import uvloop' 2>/dev/null || $(BIN)/python -m pip install --quiet --disable-pip-version-check uvloop
	$(BIN)/python -m bench
