#!/usr/bin/env bash
# Issue 15's cold-start measurement: a fresh 4-node localnet with default settings (no
# fixture primes), one cggmp24-secp256k1 keygen submitted at once with --wait and no retry,
# then one signature. Prints the wall times and each node's prime-pool counters.
# Run after `make build`, from the repository root (BIN overrides the binaries' directory).
# Takes about 10 minutes of both cores.
set -euo pipefail
BIN="${BIN:-${CARGO_TARGET_DIR:-target}/release}"
DIR="$(mktemp -d)"
PORT="${PORT:-23600}"
trap 'kill -INT "$LP" 2>/dev/null || true; wait "$LP" 2>/dev/null || true; rm -rf "$DIR"' EXIT
"$BIN/localnet" start --dir "$DIR/net" --nodes 4 --threshold 3 --block-ms 100 \
    --base-port "$PORT" >"$DIR/localnet.log" 2>&1 &
LP=$!
for _ in $(seq 1 600); do [ -f "$DIR/net/localnet.json" ] && break; sleep 0.1; done
t0=$(date +%s.%N)
"$BIN/mpcctl" --home "$DIR/net" keygen --key-id cold --scheme cggmp24-secp256k1 --wait
t1=$(date +%s.%N)
echo "keygen READY after $(echo "$t1 - $t0" | bc) s" >&2
"$BIN/mpcctl" --home "$DIR/net" sign --key-id cold --message 68656c6c6f --wait
t2=$(date +%s.%N)
echo "first signature after $(echo "$t2 - $t1" | bc) s more" >&2
for i in 0 1 2 3; do
    curl -s "http://127.0.0.1:$((PORT + 102 + 10 * i))/metrics" |
        grep -E '^seqmpc_cggmp_(prime_sets_taken_total|prime_pool_sets) ' | sed "s/^/node$i /"
done
