# runbook — `make help` lists the targets.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python

.DEFAULT_GOAL := help
.PHONY: help install docker sandbox sandbox-down lint unit integration test demo bench image clean

help: ## List the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

install: $(VENV)/.installed ## Make .venv with the project and its dev tools installed

docker: ## Install what the host needs (docker.io, debootstrap, postgresql-client) and start dockerd
	bash sandbox/ensure-deps.sh

sandbox: install docker ## Start the sandbox stack (idempotent; builds its images locally when missing)
	$(PY) -m sandbox.stack up

sandbox-down: install ## Remove the sandbox stack
	$(PY) -m sandbox.stack down

lint: install ## ruff (lint and format check) on everything, mypy --strict on agent/, checks/, remediations/
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

unit: install ## Unit tests (no services needed)
	$(PY) -m pytest tests/unit -q

integration: sandbox ## Integration tests against the real Docker engine, PostgreSQL and Redis
	$(PY) -m pytest tests/integration -q -m integration

test: lint sandbox ## Everything CI runs: lint, unit and integration tests
	$(PY) -m pytest tests -q

demo: sandbox ## The sandbox, a real fault, the runbook that diagnoses it, the audit trail
	$(PY) -m sandbox.demo

bench: sandbox ## Benchmarks: runbook against the by-hand and Ansible peers, one run; writes bench/results.json
	bash bench/ensure-peers.sh
	$(PY) -m bench.run

image: install docker ## The daemon's container image (runbook:latest) on the local Debian base, nothing pulled
	$(PY) deploy/build_image.py --tag runbook:latest

clean: sandbox-down ## Remove the sandbox and the virtualenv
	rm -rf $(VENV) .venv-ansible .pytest_cache .mypy_cache .ruff_cache
