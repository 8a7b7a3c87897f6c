# Stele's one entry point. `make test` and `make testnet` are the README's two commands;
# each installs what a fresh Debian machine lacks, then builds.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c

# One target directory outside the clone, so a fresh clone (CI's) reuses earlier builds:
# RocksDB's C++ alone takes a quarter of an hour on two cores.
export CARGO_TARGET_DIR ?= $(HOME)/.cache/stele-target
CARGO ?= cargo
CARGO_FLAGS ?=

.PHONY: help setup test lint unit bench bench-bins attack-bench sim soak join-soak fuzz testnet build-bins

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | column -t -s $$'\t'

setup: ## install what this machine lacks (libclang for rocksdb's bindgen, ...), only when missing
	@bash scripts/setup.sh

test: setup ## formatting, clippy with warnings as errors, then every test
	$(MAKE) --no-print-directory lint build-bins unit

lint: setup ## cargo fmt --check and clippy -D warnings
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets $(CARGO_FLAGS) -- -D warnings
	$(CARGO) clippy --workspace --all-targets --features stele-node/byzantine $(CARGO_FLAGS) -- -D warnings

unit: ## the workspace's tests (unit, property, integration, the fault suite), then how many each suite ran
	CARGO="$(CARGO)" CARGO_FLAGS="$(CARGO_FLAGS)" bash scripts/unit-tests.sh

bench: setup ## criterion micro benchmarks (figures in README.md)
	$(CARGO) bench --workspace $(CARGO_FLAGS)

ATTACK_BENCH_TXS ?= 4000
attack-bench: build-bins ## honest tx/s beside each attack vs before it (stele bench, ATTACK_BENCH_TXS txs each): the README's table
	STELE_ATTACK_BENCH_TXS=$(ATTACK_BENCH_TXS) $(CARGO) test -p stele-tests --test attacks --test faults $(CARGO_FLAGS) -- \
		--nocapture --test-threads 1 slowloris idle_connections large_json ten_thousand_waits \
		silent_initial_flood fetch_flood evidence_flood 2>&1 | tee $(CARGO_TARGET_DIR)/attack-bench.log | grep -E 'ATTACK-BENCH|test result|stele bench'
	@echo "| attack | unloaded tx/s | beside the attack tx/s | fraction |"
	@echo "|---|---:|---:|---:|"
	@grep -o 'ATTACK-BENCH |.*' $(CARGO_TARGET_DIR)/attack-bench.log | sed 's/^ATTACK-BENCH //'

SIM_SEEDS ?= 100000
sim: setup ## a long simulator campaign: make sim SIM_SEEDS=100000 (make test runs 1,000)
	SIM_SEEDS=$(SIM_SEEDS) $(CARGO) test -p stele-sim --test seeds $(CARGO_FLAGS) -- campaign --nocapture

SOAK_TXS ?= 1000000
SOAK_RATE ?= 2000
SOAK_RETAIN ?= 1000
soak: build-bins ## pruning soak, about ten minutes: SOAK_TXS txs at SOAK_RATE tx/s with retain_blocks = SOAK_RETAIN; prints the disk curve (SOAK lines)
	STELE_SOAK_TXS=$(SOAK_TXS) STELE_SOAK_RATE=$(SOAK_RATE) STELE_SOAK_RETAIN=$(SOAK_RETAIN) \
		$(CARGO) test --workspace --test soak $(CARGO_FLAGS) -- --ignored --nocapture a_million 2>&1 | tee $(CARGO_TARGET_DIR)/soak.log | grep -E 'SOAK|test result|panicked'

JOIN_BLOCKS ?= 100000
join-soak: build-bins ## a validator added after JOIN_BLOCKS blocks (one tx each, retain_blocks = 1000) catches up by snapshot; prints JOIN lines
	STELE_JOIN_BLOCKS=$(JOIN_BLOCKS) \
		$(CARGO) test --workspace --test soak $(CARGO_FLAGS) -- --ignored --nocapture a_validator_added 2>&1 | tee $(CARGO_TARGET_DIR)/join-soak.log | grep -E 'JOIN|test result|panicked'

FUZZ_CASES ?= 1000000
FUZZ_SEED ?= 1
fuzz: setup ## fuzz every decoder from outside: make fuzz FUZZ_CASES=1000000 FUZZ_SEED=1 (make test runs 100,000)
	FUZZ_CASES=$(FUZZ_CASES) FUZZ_SEED=$(FUZZ_SEED) $(CARGO) run -p stele-fuzz $(CARGO_FLAGS)

TESTNET_DIR ?= testnet
# The binaries are built with the same profile and the same package selection as
# `make test` (--workspace with the test targets, dependencies optimised, debug assertions
# on): another selection can unify dependency features differently, and then cargo
# compiles RocksDB's C++ a second time. A selection with test or bench targets turns the
# dev-dependencies on, so `--bins --tests` and `--benches` unify alike.
BIN_DIR := $(CARGO_TARGET_DIR)/debug

build-bins: setup ## every binary (stele-node, stele, the fault suite's stele-node-byzantine) and test, into $(CARGO_TARGET_DIR)/debug
	@# The fault suite's Byzantine validator: stele-node with the non-default feature
	@# `byzantine`, copied aside; then the normal build puts the honest binary back (both
	@# variants stay compiled in the target directory, so each rebuild is incremental).
	@# Only that binary is built with the feature: under `--workspace` every dependency
	@# keeps the features of the full build (`cargo build -v` shows RocksDB `Fresh`), and
	@# the tests and benches that link stele-node are not compiled and linked twice.
	$(CARGO) build --workspace --bin stele-node --features stele-node/byzantine $(CARGO_FLAGS)
	rm -f $(BIN_DIR)/stele-node-byzantine
	cp $(BIN_DIR)/stele-node $(BIN_DIR)/stele-node-byzantine
	@# The test targets, so that `make unit` finds them built; not the criterion benches,
	@# which `make test` never runs (clippy still checks them): `make bench-bins`.
	$(CARGO) build --workspace --bins --tests $(CARGO_FLAGS)

bench-bins: setup ## the criterion benches in the dev profile, into $(CARGO_TARGET_DIR)/debug/deps (RocksDB's C++ not compiled again)
	$(CARGO) build --workspace --benches $(CARGO_FLAGS)

testnet: build-bins ## a four-validator testnet on 127.0.0.1 from config/testnet.toml (Ctrl-C stops it)
	@if [ ! -f $(TESTNET_DIR)/genesis.json ]; then \
		$(BIN_DIR)/stele-node testnet init --config config/testnet.toml --out $(TESTNET_DIR); \
	fi
	@echo "The client is $(BIN_DIR)/stele (or: cargo install --path crates/client)."
	$(BIN_DIR)/stele-node testnet up --dir $(TESTNET_DIR)
