#!/usr/bin/env bash
# Tideline's window_file against DuckDB on the same 5 M-row Parquet file of
# bids (issue 19's table): queries A (tumbling 10 s) and B (sliding 10 s /
# 2 s), count/sum/min/max per auction, window_file at parallelism 1 and 2,
# two files at parallelism 2, and RocksDB state at parallelism 1; DuckDB at
# 1 and 2 threads. Every result is checked equal to DuckDB's.
#
#   benches/peers.sh [--rows N] [--queries A,B] [--no-rocksdb]
#
# Makes a virtualenv with pinned DuckDB, pyarrow and numpy from PyPI under
# $HOME/.cache/tideline/peers-venv, builds window_file (release, with the
# rocksdb feature unless --no-rocksdb) in the shared target directory, and
# keeps the generated input under $HOME/.cache/tideline/peers-data.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
cache="$HOME/.cache/tideline"
venv="$cache/peers-venv"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$cache/target}"

if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import duckdb, pyarrow, numpy' 2>/dev/null; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet duckdb==2.0.1 pyarrow==26.0.1 numpy==2.3.5
fi

features=(--features rocksdb)
for arg in "$@"; do [ "$arg" = "--no-rocksdb" ] && features=(); done
(cd "$root" && cargo build --release --quiet --example window_file "${features[@]}")

mkdir -p "$cache/peers-data"
exec "$venv/bin/python" "$here/peers/peers.py" \
    --window-file "$CARGO_TARGET_DIR/release/examples/window_file" \
    --dir "$cache/peers-data" "$@"
