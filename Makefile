# Two commands matter: `make run` (cloud + one local agent on SQLite) and `make test`.
SHELL := /bin/bash
UV = $(shell command -v uv 2>/dev/null || echo python3 -m uv)
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install compile run test lint bench bench-celery-env clean vendor

install: $(VENV)/.dev

# uv is installed with pip when missing; the venv is built from the lock, never resolved anew. Its
# modules are compiled once here: where PYTHONDONTWRITEBYTECODE is set (this machine, CI) every process
# would otherwise compile what it imports anew, seconds for each cloud and agent the tests start.
# `make run` needs only the project's own dependencies (`--no-dev`; `--inexact` keeps test packages a
# `make test` installed); `make test`, lint and bench add the dev group (test servers, linters, browser
# driver), several hundred MB more.
UV_SYNC = @command -v uv >/dev/null 2>&1 || python3 -m uv --version >/dev/null 2>&1 || python3 -m pip install --quiet uv
$(VENV)/.run: pyproject.toml uv.lock
	$(UV_SYNC)
	$(UV) sync --frozen --no-dev --inexact --compile-bytecode
	@touch $@
$(VENV)/.dev: pyproject.toml uv.lock
	$(UV_SYNC)
	$(UV) sync --frozen --compile-bytecode
	@touch $@ $(VENV)/.run

# Our own modules, compiled for the same reason (quick: only what changed is compiled again).
RUN_SOURCES := wire cloud agent executors files cli
SOURCES := $(RUN_SOURCES) tests bench
compile: install
	@$(BIN)/python -m compileall -q $(SOURCES) >/dev/null

PORT ?= 8080
run: $(VENV)/.run
	@$(BIN)/python -m compileall -q $(RUN_SOURCES) >/dev/null
	$(BIN)/tiangong up --host 127.0.0.1 --port $(PORT) --data-dir ./data --agent-id local

# Test modules run in parallel workers (pytest-xdist), a module's tests on one worker, since they share
# its cloud; TEST_WORKERS=0 runs them in this process, in order. Three workers on two cores: much of the
# suite waits (leases, long-polls, servers), so a third worker fills the idle time.
TEST_WORKERS ?= 3
test: compile
	$(BIN)/pytest -q -n $(TEST_WORKERS) --dist loadscope

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy $(SOURCES)
	$(BIN)/lint-imports

# Round trip and throughput on SQLite and on PostgreSQL with 1 and 2 replicas (PostgreSQL on
# 127.0.0.1:5432, as for the tests), upload, then the 10,000-task chaos run (about 1.5 minutes here); then
# latency with a million finished tasks against ten thousand (about 4 minutes, most of it the fills),
# and the cloud's CPU with 1,000 idle agents (about 2 minutes).
bench: compile bench-celery-env
	$(BIN)/python bench/roundtrip.py
	$(BIN)/python bench/upload.py
	$(BIN)/python bench/masking.py
	$(BIN)/python bench/logs.py
	$(BIN)/python bench/log_followers.py
	$(BIN)/python bench/chaos.py --tasks 10000
	$(BIN)/python bench/versus_celery.py
	$(BIN)/python bench/service_cycle.py
	$(BIN)/python bench/bigdb.py
	$(BIN)/python bench/idle_agents.py --transport channel
	$(BIN)/python bench/idle_agents.py --transport http

# Celery for bench/versus_celery.py, from a project and lock of its own (bench/celery): it pins
# python-dateutil<3, which resolved with ours would move python-dateutil and kubernetes down. --project
# makes uv use that directory's uv.lock and .venv only; ours are left as they are.
CELERY_ENV := bench/celery
bench-celery-env: $(CELERY_ENV)/.venv/bin/celery
$(CELERY_ENV)/.venv/bin/celery: $(CELERY_ENV)/pyproject.toml $(CELERY_ENV)/uv.lock | install
	$(UV) sync --frozen --compile-bytecode --project $(CELERY_ENV)
	@touch $@

# The web UI's vendored xterm.js, fetched again from npm and checked against cloud/web/static/vendor/README.md.
vendor:
	cloud/web/vendor.sh

clean:
	rm -rf $(VENV) bench/celery/.venv .mypy_cache .ruff_cache .pytest_cache
