#!/usr/bin/env bash
# Runs every Nexmark query through the driver at parallelism 1 and 2, with
# in-memory and RocksDB state, checkpoints off and every 1 s, and prints the
# driver's last line for each run. Usage:
#   bash benches/nexmark.sh [EVENTS] [QUERIES...]
# e.g. `bash benches/nexmark.sh 10000000 q0 q5`. Builds the example once.
set -euo pipefail
cd "$(dirname "$0")/.."
events="${1:-10000000}"
shift || true
queries=("$@")
if [ ${#queries[@]} -eq 0 ]; then
  queries=(q0 q1 q2 q3 q5 q7 q8 q11 w1 w2)
fi
# `PROFILE=bench` reuses a `cargo bench` build (the same settings as release).
cargo build --profile "${PROFILE:-release}" --features rocksdb --example nexmark --quiet
driver="${CARGO_TARGET_DIR:-target}/release/examples/nexmark"
for q in "${queries[@]}"; do
  for p in 1 2; do
    for state in memory rocksdb; do
      for checkpoints in off 1s; do
        flags=(--query "$q" --events "$events" --parallelism "$p" --state "$state")
        if [ "$checkpoints" != off ]; then
          flags+=(--checkpoint-interval "$checkpoints")
        fi
        "$driver" "${flags[@]}" | tail -n 1 | sed "s/^/p=$p state=$state checkpoints=$checkpoints /"
      done
    done
  done
done
