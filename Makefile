# Two commands for a fresh clone: `make run` and `make test`. Everything else is a step of those.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
UV := $(VENV)/bin/uv
UV_VERSION := 0.13.9
# Never let uv fetch a Python of its own: the machine's 3.11 is the one.
export UV_PYTHON_DOWNLOADS := never
# CI runs the integration and end-to-end tests against the machine's PostgreSQL.
ifeq ($(CI),true)
export CARBON_TEST_DATABASE_URL ?= postgresql+asyncpg://postgres@127.0.0.1:5432/test
endif

.PHONY: run test setup tools lint contracts unit contract integration e2e bench bench-season bench-auction bench-deadlines clean

run: setup  ## start the whole platform on the embedded broker and SQLite
	$(VENV)/bin/carbon up

test: setup tools lint  ## install what is needed, then lint and run the whole suite
	$(VENV)/bin/pytest

setup: $(VENV)/.synced

$(VENV)/.synced: uv.lock pyproject.toml
	@test -x $(UV) || { $(PYTHON) -m venv $(VENV) && $(VENV)/bin/python -m pip install -q "uv==$(UV_VERSION)"; }
	$(UV) sync --frozen --python $(VENV)/bin/python
	@touch $@

# promtool checks the alert rules; Debian's prometheus package brings it. Alertmanager (Debian's
# prometheus-alertmanager: the binary prometheus-alertmanager, and amtool) delivers them in the
# end-to-end test of alerting.
tools:
	@command -v promtool >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null; }
	@command -v prometheus-alertmanager >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus-alertmanager >/dev/null; }

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy services contracts/python tests
	$(VENV)/bin/python -m carbon_contracts.export --check

contracts: setup  ## regenerate schemas and asyncapi.yaml from the models
	$(VENV)/bin/python -m carbon_contracts.export

unit contract integration e2e: setup
	$(VENV)/bin/pytest tests/$@

bench: setup  ## figures against the embedded stack: latency from POST to event on the topic
	$(VENV)/bin/python tests/bench/latency.py

bench-season: setup  ## figures of a whole compliance season end to end (BENCH_ARGS="--entities 500")
	$(VENV)/bin/python tests/bench/season.py $(BENCH_ARGS)

bench-auction: setup  ## figures of a paid auction: bids placed, the clearing (BENCH_ARGS="--bidders 5000")
	$(VENV)/bin/python tests/bench/auction.py $(BENCH_ARGS)

bench-deadlines: setup  ## figures of the deadline watcher: reminders, the pass, gauges (BENCH_ARGS="--entities 5000")
	$(VENV)/bin/python tests/bench/deadlines.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
