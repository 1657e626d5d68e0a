# Two commands on a fresh machine: `make run` and `make test`. Each target does its own set-up.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
SLITHER_VENV := .venv-slither
STAMP_PY := $(VENV)/.installed
STAMP_NPM := node_modules/.installed
WEB_BUNDLE := gateway/web/static/build.json
HYPOTHESIS_PROFILE ?= ci

.PHONY: help setup run test test-fast test-long check lint imports typecheck slither contracts bench-gas bench-audit bench-analytics bench-api bench-e2e bench-e2e-pg bench-e2e-curve bench-e2e-embedded bench-ceiling bench-devnode clean web screenshots

help:
	@echo "make run        set up and start the embedded system"
	@echo "make test       set up and run the test suite"
	@echo "make test-fast  the unit tests only (no slow or integration tests), for the edit loop"
	@echo "make test-long  the long suite: tests marked long, the escrow state machine at 2,000 examples"
	@echo "make check      ruff, import-linter, mypy --strict, Slither"
	@echo "make bench-gas  gas table -> bench/results/gas.json"
	@echo "make bench-audit  cardless audit of 10,000 orders -> bench/results/audit.json"
	@echo "make bench-analytics  1M orders in PostgreSQL: analytics and risk timings -> bench/results/analytics.json"
	@echo "make bench-api  order status and quotes under 16 clients -> bench/results/api.json"
	@echo "make bench-e2e  anvil: raw pay rate, then orders paid -> settled -> bench/results/e2e.json (N=200)"
	@echo "make bench-e2e-pg  phases d1 and d4 alone (PostgreSQL, 1 and 4 workers) -> bench/results/e2e-pg.json"
	@echo "make bench-e2e-curve  phases a and bmax at N = 100, 1,000, 10,000 -> bench/results/e2e-curve.json"
	@echo "make bench-e2e-embedded  the same on the make-run system -> bench/results/e2e-embedded.json"
	@echo "make bench-ceiling  anvil: raw pay rate, then a zero-cost oracle's settled rate (driver) -> bench/results/ceiling.json (N=1000)"
	@echo "make bench-devnode  the py-evm dev node alone: CPU per pay -> bench/results/devnode.json"
	@echo "make contracts  recompile and re-export contracts/build"
	@echo "make web        rebuild the pages' bundle (frontend/ -> gateway/web/static, committed)"
	@echo "make screenshots  run the browser tests and keep their screenshots in docs/screenshots"

setup: $(STAMP_PY) $(STAMP_NPM) $(WEB_BUNDLE)

$(STAMP_PY): pyproject.toml requirements.lock
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) on PATH"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -r requirements.lock
	$(PIP) install -q --no-deps -e .
	touch $@

# A worktree that links node_modules to another checkout's must not `npm ci` through the link: npm
# empties the target first, under the other checkout's feet.
$(STAMP_NPM): package.json package-lock.json
	@if [ -L node_modules ]; then echo "node_modules links to $$(readlink node_modules): run npm ci there, not through the link" >&2; exit 1; fi
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

# The pages' one bundle (esbuild): rebuilt when a source is newer. Committed, so the gateway runs without
# npm; build.json holds the sources' SHA-256 and tests/gateway/test_pages_api.py fails on a stale one.
$(WEB_BUNDLE): $(shell find frontend/src -type f) frontend/build.mjs verifier/verify-order.mjs package-lock.json | $(STAMP_NPM)
	node frontend/build.mjs

web: $(STAMP_NPM)
	node frontend/build.mjs

# The browser tests' screenshots (checkout steps, dashboard, auditor view, phone + Chinese), kept in
# docs/screenshots/ (the README shows them). One process: one Chromium, one embedded system.
screenshots: setup
	$(CHROMIUM_SETUP) CARDLESS_SCREENSHOTS=docs/screenshots $(VENV)/bin/pytest -p no:xdist -q tests/browser

contracts: $(STAMP_NPM)
	npx hardhat export-build

run: setup
	$(VENV)/bin/cardless run

# Two workers (the CI machine has two cores); --dist loadgroup keeps an xdist_group (a crash-matrix
# half, with its module-scoped system) on one worker, and --no-loadscope-reorder keeps the longest-first
# order tests/conftest.py gives the collection. Each worker has its own session fixtures, free ports
# and temporary directory (pytest-of-$USER/pytest-N/popen-gwK). PYTEST_WORKERS=0 runs in one process.
PYTEST_WORKERS ?= 2
PYTEST_XDIST := -n $(PYTEST_WORKERS) --dist loadgroup --no-loadscope-reorder

# Everything but the tests marked `long` (minutes each): under 6 minutes on two cores.
# The PostgreSQL tests need CARDLESS_TEST_PG_URL; unset, .ci/postgres installs (as root), starts the
# local cluster and names it, so `make test` sets up what it needs on a fresh machine.
PG_SETUP = if [ -z "$$CARDLESS_TEST_PG_URL" ]; then pg_env=$$(.ci/postgres) && eval "$$pg_env"; fi;
# The browser tests drive Debian's Chromium: .ci/chromium installs it (as root) when it is missing.
CHROMIUM_SETUP = .ci/chromium >/dev/null;

test: setup
	$(PG_SETUP) $(CHROMIUM_SETUP) HYPOTHESIS_PROFILE=$(HYPOTHESIS_PROFILE) $(VENV)/bin/pytest $(PYTEST_XDIST) -m "not long" --durations=15

# The edit loop: every package's unit tests, without the tests marked slow or integration, and the
# property tests on the `dev` Hypothesis profile (20 examples): under 60 s.
test-fast: setup
	$(PG_SETUP) HYPOTHESIS_PROFILE=dev $(VENV)/bin/pytest -n $(PYTEST_WORKERS) --dist loadfile -m "not slow and not integration and not long" --durations=5

# The long suite (CI runs it after `make test`): the tests marked `long`, then the escrow state
# machine at 2,000 examples.
test-long: setup
	$(PG_SETUP) HYPOTHESIS_PROFILE=$(HYPOTHESIS_PROFILE) $(VENV)/bin/pytest $(PYTEST_XDIST) -m long --durations=15
	HYPOTHESIS_PROFILE=long $(VENV)/bin/pytest $(PYTEST_XDIST) --durations=15 tests/contracts/test_invariants.py

lint: $(STAMP_PY)
	$(VENV)/bin/ruff check cardless gateway oracles adapters tests bench
	$(VENV)/bin/ruff format --check cardless gateway oracles adapters tests bench

# import-linter contracts in pyproject.toml: imports run one way (docs/architecture.md).
imports: $(STAMP_PY)
	$(VENV)/bin/lint-imports

typecheck: $(STAMP_PY)
	$(VENV)/bin/mypy

$(SLITHER_VENV)/.installed: requirements-slither.lock
	$(PYTHON) -m venv $(SLITHER_VENV)
	$(SLITHER_VENV)/bin/pip install -q --upgrade pip
	$(SLITHER_VENV)/bin/pip install -q -r requirements-slither.lock
	touch $@

# Fresh, private build (slither.hardhat.config.js): Slither reads every build-info file, and the incremental
# .hardhat/artifacts keeps stale ones. Fails on High/Medium findings not triaged in slither.db.json
# (see docs/security/slither.md). SLITHER_ARGS=--triage-mode re-triages interactively.
slither: $(SLITHER_VENV)/.installed $(STAMP_NPM)
	rm -rf .hardhat/slither
	npx hardhat --config slither.hardhat.config.js compile --quiet
	$(SLITHER_VENV)/bin/slither . --config-file slither.config.json \
		--exclude-informational --exclude-low --exclude-optimization --fail-medium $(SLITHER_ARGS)

check: lint imports typecheck slither

bench-gas: setup
	$(PY) -m bench.gas

# Minutes: builds 10,000 orders on the dev chain node, then times one `cardless audit` of them.
bench-audit: setup
	$(PY) -m bench.audit

# 1,000,000 synthetic orders COPYed into a throw-away PostgreSQL database (minutes; not in make test).
bench-analytics: setup
	$(PG_SETUP) $(PY) -m bench.analytics

# Issue 12. The load generator runs in a process of its own; PROFILE=dir adds py-spy profiles.
N ?= 200
SECONDS_PER_ROUTE ?= 10
bench-api: setup
	$(PY) -m bench.api --seconds $(SECONDS_PER_ROUTE) $(if $(PROFILE),--profile $(PROFILE))

# Phases a (raw pay rate), b50, bmax, c (provider 200 ms), d1/d4 (PostgreSQL, 1 and 4 oracle workers).
# N=1000 takes about 3 times as long per phase as N=200 (docs/benchmarks.md); PHASES=a,bmax for a subset.
bench-e2e: setup $(STAMP_NPM)
	$(PG_SETUP) $(PY) -m bench.e2e --orders $(N) $(if $(PHASES),--phases $(PHASES)) $(if $(PROFILE),--profile $(PROFILE))

# PostgreSQL, one oracle worker against four (issue 12's d1/d4), in a file of their own.
bench-e2e-pg: setup $(STAMP_NPM)
	$(PG_SETUP) $(PY) -m bench.e2e --orders $(N) --phases d1,d4 --out bench/results/e2e-pg.json $(if $(PROFILE),--profile $(PROFILE))

bench-e2e-curve: setup $(STAMP_NPM)
	$(PY) -m bench.curve $(if $(CURVE_N),--orders $(CURVE_N))

bench-e2e-embedded: setup
	$(PY) -m bench.e2e --embedded --orders $(or $(EMBEDDED_N),50) $(if $(PROFILE),--profile $(PROFILE))

# Issue 12's ceiling: phase a, then phase z (a minimal driver does the oracle's external work, all its
# computing done before the clock) on a fresh system; the ratio a free oracle would reach.
bench-ceiling: setup $(STAMP_NPM)
	$(PY) -m bench.ceiling --orders $(or $(CEILING_N),1000)

# The py-evm dev node alone (no gateway, no oracle): CPU per pay in process and over HTTP.
bench-devnode: setup
	$(PY) -m bench.devnode --pays $(or $(DEVNODE_PAYS),200)

clean:
	rm -rf $(VENV) $(SLITHER_VENV) node_modules .hardhat
