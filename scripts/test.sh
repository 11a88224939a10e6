#!/usr/bin/env bash
# The whole test suite, every Cargo feature: the README's second command.
#
#   scripts/test.sh [extra cargo test arguments]
#
# 1. installs the system packages the suite needs when they are missing
#    (scripts/setup.sh);
# 2. starts the services the suite needs, and stops them on exit: a
#    single-node Kafka broker on 127.0.0.1:${TIDELINE_KAFKA_PORT:-19092}
#    (scripts/kafka.sh; the first run downloads its jars from Maven Central
#    into $HOME/.cache/tideline), exported as TIDELINE_KAFKA_BROKERS; a
#    private PostgreSQL cluster on 127.0.0.1:${TIDELINE_POSTGRES_PORT:-15432}
#    with logical replication on (scripts/postgres.sh), its connection string
#    exported as TIDELINE_POSTGRES_URL; Chromium needs no service: the
#    browser test starts it headless itself (scripts/setup.sh installs it);
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
# started, whatever way this script exits.
started_services=()

stop_services() {
  local service
  for service in "${started_services[@]+"${started_services[@]}"}"; do
    echo "test.sh: stopping $service"
    case "$service" in
      kafka) scripts/kafka.sh stop || true ;;
      postgres) scripts/postgres.sh stop || true ;;
    esac
  done
}
trap stop_services EXIT

# Kafka (`kafka` feature): a real broker, fresh (no topics) at each run. Its
# name goes in first, so that a start failing half way is cleaned up too.
started_services+=("kafka")
kafka_env="$(scripts/kafka.sh start)"
case "$kafka_env" in
  TIDELINE_KAFKA_BROKERS=?*) export TIDELINE_KAFKA_BROKERS="${kafka_env#TIDELINE_KAFKA_BROKERS=}" ;;
  *) echo "test.sh: unexpected output of scripts/kafka.sh start: $kafka_env" >&2; exit 1 ;;
esac
echo "test.sh: Kafka broker at $TIDELINE_KAFKA_BROKERS"

# PostgreSQL (`postgres` feature): a fresh cluster (only the empty database
# `tideline`) at each run, wal_level=logical; tests make their own tables,
# publications and slots.
started_services+=("postgres")
postgres_env="$(scripts/postgres.sh start)"
case "$postgres_env" in
  TIDELINE_POSTGRES_URL=?*) export TIDELINE_POSTGRES_URL="${postgres_env#TIDELINE_POSTGRES_URL=}" ;;
  *) echo "test.sh: unexpected output of scripts/postgres.sh start: $postgres_env" >&2; exit 1 ;;
esac
# Its TLS certificate is signed by a throwaway CA (the sslmode=verify-full
# tests verify against it).
export TIDELINE_POSTGRES_CA="${TIDELINE_POSTGRES_DIR:-${TMPDIR:-/tmp}/tideline-postgres-${TIDELINE_POSTGRES_PORT:-15432}}/ca.pem"
echo "test.sh: PostgreSQL at $TIDELINE_POSTGRES_URL (TLS CA $TIDELINE_POSTGRES_CA)"

# --- 3. the suite -------------------------------------------------------------
cargo test --workspace --all-features "$@"
