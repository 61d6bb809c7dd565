# seqmpc: two commands for a newcomer.
#   make localnet   build everything and run a 4-node local network in the foreground
#   make test       build once (release) and run every test: unit, ABCI app, end-to-end
CARGO        ?= cargo
TARGET_DIR   ?= $(or $(CARGO_TARGET_DIR),target)
BIN          := $(TARGET_DIR)/release
DIR          ?= ./localnet-data
NODES        ?= 4
THRESHOLD    ?= 3
BLOCK_MS     ?= 100
export CARGO_TARGET_DIR := $(TARGET_DIR)
export SEQMPC_BIN_DIR := $(abspath $(BIN))

.PHONY: build localnet test lint bench clean

build:
	$(CARGO) build --release --locked --workspace --bins

localnet: build
	$(BIN)/localnet start --dir $(DIR) --nodes $(NODES) --threshold $(THRESHOLD) --block-ms $(BLOCK_MS)

# One release build serves the binaries and the tests (the e2e test starts the binaries).
test: build
	@if $(CARGO) nextest --version >/dev/null 2>&1; then \
		$(CARGO) nextest run --release --locked --workspace --no-fail-fast; \
	else \
		$(CARGO) test --release --locked --workspace --no-fail-fast; \
	fi

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --release --locked --workspace --all-targets -- -D warnings

bench: build
	$(BIN)/seqmpc-bench --mpcd-dir $(BIN)

clean:
	rm -rf $(DIR)
