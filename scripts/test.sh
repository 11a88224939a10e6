#!/usr/bin/env bash
# The whole test suite, every Cargo feature: the README's second command.
#
#   scripts/test.sh [extra cargo test arguments]
#
# 1. installs the system packages the suite needs when they are missing
#    (scripts/setup.sh);
# 2. starts the services the suite needs, and stops them on exit;
# 3. runs `cargo test --workspace --all-features`.
#
# The build cache is $CARGO_TARGET_DIR, by default under $HOME/.cache, so
# runs share one cache (.ci/run builds with the same profile and features).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/tideline/target}"

# --- 1. system packages -----------------------------------------------------
scripts/setup.sh

# --- 2. services ------------------------------------------------------------
# Each service the tests need starts here and exports where it listens
# (e.g. TIDELINE_KAFKA_BROKERS); stop_services stops every one that was
# started, whatever way this script exits. Today the suite needs none.
#
# Planned: a Kafka broker (`kafka` feature), PostgreSQL (`postgres`),
# Chromium for the web UI (`web`).
started_services=()

stop_services() {
  local service
  for service in "${started_services[@]+"${started_services[@]}"}"; do
    echo "test.sh: stopping $service"
    # e.g. kill "$KAFKA_PID" 2>/dev/null || true
  done
}
trap stop_services EXIT

# start services (none yet); each one appends its name:
#   started_services+=("kafka")

# --- 3. the suite -------------------------------------------------------------
cargo test --workspace --all-features "$@"
