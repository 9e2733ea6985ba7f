# Squall's two commands for a newcomer:
#   make demo   install what a fresh machine lacks, build, run the main job
#   make test   run every test
#
# Everything the project needs is installed from here: apt packages, the
# Python virtualenv at .venv. Stamps in .stamps/ make re-runs instant.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c

# The interpreter that makes .venv. PyO3 builds against the same one
# (see ARCHITECTURE.md, "Embedding CPython"). Debian's by default: it is
# readable by every user, so an executor started as root can run user
# functions as `nobody` ([executor] run_as); an interpreter under root's home
# (pyenv's, say) keeps them root.
PYTHON ?= $(firstword $(wildcard /usr/bin/python3) $(shell command -v python3))
export PYO3_PYTHON ?= $(PYTHON)

VENV := .venv
STAMPS := .stamps
SQUALL := target/release/squall

# Debian packages the build and tests use. g++ builds the vendored libzmq;
# python3-dev and python3-venv are the interpreter executors embed and the
# virtualenv's; redis-server is the peer the KVS benchmark (and its tests)
# start, and redis-tools brings redis-cli and redis-benchmark to cross-check
# it.
APT_PACKAGES := g++ make pkg-config python3-dev python3-venv redis-server redis-tools chromium

.PHONY: demo test setup build bench-kvs bench-durable bench-functions bench-throughput bench-consistency bench-async bench-autoscale test-faults clean help

help:
	@echo "make demo    install everything, build, and run the main job"
	@echo "make test    run all tests (Rust unit, property, integration; Python client)"
	@echo "make setup   install apt packages, the Python virtualenv and the squall Python package"
	@echo "make build   build the release binary $(SQUALL)"
	@echo "make bench-kvs  run the KVS benchmark matrix: Squall (1 and 2 threads), Redis, ZeroMQ floor (~5 min)"
	@echo "make bench-durable  durable puts beside Redis's AOF (always, everysec), recovery time of 1M keys, memory- vs disk-tier reads (~7 min)"
	@echo "make bench-functions  run the functions benchmark: Squall vs Ray vs Dask (~3 min; installs them into .venv-bench)"
	@echo "make bench-throughput  calls/s alone: 10,000 tiny calls in flight, 3 rounds, then again after compose.py's steps (~1 min)"
	@echo "make bench-consistency  the price of each consistency level and of a session (~1 min)"
	@echo "make bench-async  1,000 calls of an async def awaiting 100 ms against the same written blocking (~1.5 min)"
	@echo "make test-faults  fault campaign: load while processes are killed, stalled, stopped (10 min; MINUTES=1 shorter)"
	@echo "make clean   remove build outputs, the virtualenvs and stamps"

setup: $(STAMPS)/apt $(STAMPS)/venv $(STAMPS)/client-py

$(STAMPS)/apt: Makefile
	@mkdir -p $(STAMPS)
	@missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing apt packages: $$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi
	@touch $@

# A .venv made by another interpreter than PYTHON is made again (and the
# package built into it).
VENV_HOME := $(shell sed -n 's/^home = //p' $(VENV)/pyvenv.cfg 2>/dev/null)
PYTHON_HOME := $(patsubst %/,%,$(dir $(realpath $(PYTHON))))
ifneq ($(VENV_HOME),)
ifneq ($(VENV_HOME),$(PYTHON_HOME))
$(shell rm -f $(STAMPS)/venv $(STAMPS)/client-py)
endif
endif

$(STAMPS)/venv: requirements-dev.txt | $(STAMPS)/apt
	@mkdir -p $(STAMPS)
	$(PYTHON) -m venv --clear $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -r requirements-dev.txt
	@touch $@

# The `squall` Python package (client-py/), built by maturin and installed
# into .venv in editable mode: its Python sources are used in place, the
# native module is rebuilt when the Rust sources it is built from change
# (client-py and the crates it depends on: anna, transport, py).
# A debug build by default, the profile CI builds anyway;
# `make CLIENT_PY_PROFILE=--release setup` for an optimised one.
CLIENT_PY_PROFILE ?=
CLIENT_PY_INPUTS := $(shell find client-py/src anna/src transport/src py/src -name '*.rs' 2>/dev/null) \
	client-py/Cargo.toml client-py/pyproject.toml anna/Cargo.toml transport/Cargo.toml \
	py/Cargo.toml Cargo.lock

$(STAMPS)/client-py: $(STAMPS)/venv $(CLIENT_PY_INPUTS)
	@mkdir -p $(STAMPS)
	VIRTUAL_ENV=$(CURDIR)/$(VENV) PATH=$(CURDIR)/$(VENV)/bin:$$PATH \
		$(VENV)/bin/maturin develop -q $(CLIENT_PY_PROFILE) -m client-py/Cargo.toml
	@touch $@

build:
	cargo build --release -p squall

# The main job: a local cluster of real processes, a round trip of several
# lattice types through it, and a clean stop (deploy/demo.sh).
demo: setup build
	@echo "== Squall $$($(SQUALL) --version) =="
	SQUALL=$(SQUALL) deploy/demo.sh

test:
	cargo test --workspace
	@$(MAKE) --no-print-directory $(STAMPS)/venv
	deploy/k8s/validate.sh
	@$(MAKE) --no-print-directory $(STAMPS)/client-py
	$(VENV)/bin/python -m pytest -q client-py/tests

# The KVS benchmark's standard matrix, every backend side by side with a
# redis-server it starts itself; figures are recorded in benches/RESULTS.md.
bench-kvs: $(STAMPS)/apt
	cargo build --release -p squall -p squall-benches
	target/release/squall-bench kvs --matrix --squall-threads 1,2

# Durable writes, side by side in one run: Squall at ack durable beside
# Redis with appendfsync always, Squall's 100 ms flush beside everysec
# (writes only, 16 clients and 1; both keep their files under the system
# temp dir); then recovery: 1M keys in a one-node cluster (1 and 2
# threads) stopped cleanly and killed, the time until the restarted node
# serves them, beside Redis restarting on its AOF. RECOVERY_ARGS passes
# more flags (e.g. --keys 100000). Figures in benches/RESULTS.md.
RECOVERY_ARGS ?=
bench-durable: $(STAMPS)/apt
	cargo build --release -p squall -p squall-benches
	target/release/squall-bench kvs --durable --squall-threads 1,2
	target/release/squall-bench recovery $(RECOVERY_ARGS)
	target/release/squall-bench tiers

# The functions benchmark: composition, locality, throughput, Squall vs Ray
# vs Dask side by side; the peers live in .venv-bench (not .venv, not CI).
BENCH_VENV := .venv-bench

$(STAMPS)/venv-bench: benches/functions/requirements.txt benches/functions/setup.sh \
		$(CLIENT_PY_INPUTS) $(wildcard client-py/python/squall/*.py)
	@mkdir -p $(STAMPS)
	PYTHON=$(PYTHON) benches/functions/setup.sh
	@touch $@

bench-functions: $(STAMPS)/venv-bench
	cargo build --release -p squall
	$(BENCH_VENV)/bin/python benches/functions/compose.py

# Calls per second alone, in a process of its own (A/B of builds:
# benches/functions/throughput.py --binary A --binary B --repeat 2).
bench-throughput: $(STAMPS)/venv-bench
	cargo build --release -p squall
	$(BENCH_VENV)/bin/python benches/functions/throughput.py --after get

# The price of each consistency level (a DAG across executors reading 1 and
# 10 keys) and of carrying a session of 1,024 writes with every call.
bench-consistency: $(STAMPS)/client-py
	cargo build --release -p squall
	$(VENV)/bin/python benches/functions/consistency.py

# Coroutine functions: 1,000 calls of an `async def` awaiting 100 ms against
# the same function written blocking, on 2 executors, at max_async_calls 100
# and 10; wall time beside the ideal. Figures in benches/RESULTS.md.
bench-async: $(STAMPS)/client-py
	cargo build --release -p squall
	$(VENV)/bin/python benches/functions/async_calls.py

# Autoscaling: a load spike against a local cluster whose monitor may add
# a node, storage tier then compute tier (~3 minutes); reaction times,
# throughput and p99 printed, CSV and SVG written to benches/results/,
# figures recorded in benches/RESULTS.md. The compute run registers its
# function with the squall package of .venv.
bench-autoscale: $(STAMPS)/client-py
	cargo build --release -p squall -p squall-benches
	target/release/squall-bench autoscale

# The fault campaign: a write-and-call load against a local cluster for
# MINUTES while random processes are killed (kill -9), stalled
# (SIGSTOP/SIGCONT) and stopped (SIGTERM); prints acknowledged and lost
# writes, failed calls by error, calls without an answer and recovery
# times, and fails if a write was lost or a call went unanswered
# (benches/faults.py --help; FAULTS_ARGS passes more flags). A 40-second run
# is part of `make test` (client-py/tests/test_faults.py).
MINUTES ?= 10
FAULTS_ARGS ?=
test-faults: $(STAMPS)/client-py
	cargo build --release -p squall
	$(VENV)/bin/python benches/faults.py --minutes $(MINUTES) --binary $(SQUALL) $(FAULTS_ARGS)

clean:
	cargo clean
	rm -rf $(VENV) $(BENCH_VENV) $(STAMPS)
