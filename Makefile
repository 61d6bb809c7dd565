# seqmpc: two commands for a newcomer.
#   make localnet   build everything and run a 4-node local network in the foreground
#   make test       build once (release) and run every test: unit, ABCI app, end-to-end
#   make fuzz       run every no-panic property for FUZZ_SECS seconds each (default 60)
#   make sim        run the deterministic simulator over SEEDS seeds per scenario (default 20)
CARGO        ?= cargo
TARGET_DIR   ?= $(or $(CARGO_TARGET_DIR),target)
BIN          := $(TARGET_DIR)/release
DIR          ?= ./localnet-data
NODES        ?= 4
THRESHOLD    ?= 3
BLOCK_MS     ?= 100
FUZZ_SECS    ?= 60
SEEDS        ?= 20
SCENARIO     ?=
DEV_PRIMES   ?=
# The dev/test build compiles in the test-only fault injection (inert unless SEQMPC_FAULTS is
# set; the malicious-peer e2e tests set it). Production builds leave it out:
#   cargo build --release -p seqmpc-abci
FEATURES     ?= --features seqmpc-abci/fault-injection
export CARGO_TARGET_DIR := $(TARGET_DIR)
export SEQMPC_BIN_DIR := $(abspath $(BIN))
# CGGMP24's big integers on GMP when GMP can be built here (gmp-mpfr-sys compiles GMP from
# source, which needs m4: `apt-get install m4`): about half the CPU of the pure-Rust backend
# (README, "CGGMP24 arithmetic"). GMP=0 forces pure Rust; `mpcd`'s /status names the backend.
GMP          ?= $(if $(shell command -v m4 2>/dev/null),1,0)
ifeq ($(GMP),1)
export RUSTFLAGS := $(strip $(RUSTFLAGS) --cfg seqmpc_gmp)
endif
BACKEND      := $(if $(filter 1,$(GMP)),GMP,pure Rust (no m4 here to build GMP))

.PHONY: build localnet test sim fuzz lint bench clean

build:
	@echo "CGGMP24 big integers: $(BACKEND)"
	$(CARGO) build --release --locked --workspace --bins $(FEATURES)

# DEV_PRIMES=1: INSECURE developer mode, ECDSA keys in seconds from the public test primes.
localnet: build
	@echo "make localnet: a cggmp24-secp256k1 keygen waits for safe primes after a cold start (minutes on 2 cores);"
	@echo "  for ECDSA in seconds with PUBLIC test primes (INSECURE, trials only): make localnet DEV_PRIMES=1"
	$(BIN)/localnet start --dir $(DIR) --nodes $(NODES) --threshold $(THRESHOLD) --block-ms $(BLOCK_MS) $(if $(DEV_PRIMES),--dev-primes)

# One release build serves the binaries and the tests (the e2e test starts the binaries).
test: build
	@if $(CARGO) nextest --version >/dev/null 2>&1; then \
		$(CARGO) nextest run --release --locked --workspace --no-fail-fast $(FEATURES); \
	else \
		$(CARGO) test --release --locked --workspace --no-fail-fast $(FEATURES); \
	fi

# The deterministic simulator (sim/): every scenario over SEEDS seeds; a failing run prints
# the command that replays it. SCENARIO=<name> runs one scenario.
# Runs the binary `make build` made: `cargo run -p seqmpc-sim` would unify features differently
# and rebuild the workspace crates.
sim: build
	$(BIN)/seqmpc-sim --seeds $(SEEDS) $(if $(SCENARIO),--scenario $(SCENARIO))

# The no-panic properties (txs and the chain's CheckTx/FinalizeBlock, p2p envelope and codec, every protocol message decoder, stored
# shares and records) with fresh random inputs until FUZZ_SECS seconds have passed, each;
# `make test` runs a short pass of the same properties (PROPTEST_CASES overrides its counts).
fuzz:
	FUZZ_SECS=$(FUZZ_SECS) $(CARGO) test --release --locked -p seqmpc-proto --test no_panic -- --nocapture
	FUZZ_SECS=$(FUZZ_SECS) $(CARGO) test --release --locked -p seqmpc-module --lib no_panic -- --nocapture
	FUZZ_SECS=$(FUZZ_SECS) $(CARGO) test --release --locked -p seqmpc-abci --test no_panic -- --nocapture

# Both builds: the test build (FEATURES) and the production build (no test-only code); with
# GMP, the pure-Rust production build too (in a target dir of its own, not to rebuild the other).
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --release --locked --workspace --all-targets $(FEATURES) -- -D warnings
	$(CARGO) clippy --release --locked --workspace --all-targets -- -D warnings
ifeq ($(GMP),1)
	RUSTFLAGS= CARGO_TARGET_DIR=$(TARGET_DIR)/pure-rust $(CARGO) clippy --release --locked --workspace --all-targets -- -D warnings
endif

bench: build
	$(BIN)/seqmpc-bench --mpcd-dir $(BIN)

clean:
	rm -rf $(DIR)
