#!/usr/bin/env bash
# A private, throwaway PostgreSQL cluster on 127.0.0.1, for the test suite
# (`postgres` feature): logical replication on, durability off. Used by
# scripts/test.sh; also handy by hand.
#
#   scripts/postgres.sh start    initdb a fresh cluster (stopping and wiping a
#                                cluster an earlier, aborted run left on the
#                                port), start it, wait until pg_isready
#                                answers, create the database `tideline`,
#                                print on stdout
#                                TIDELINE_POSTGRES_URL=host=127.0.0.1 port=PORT user=postgres dbname=tideline
#                                (libpq key=value form, as tokio-postgres takes it)
#   scripts/postgres.sh stop     stop it (pg_ctl stop -m fast) and delete its
#                                directory; does nothing when there is none
#   scripts/postgres.sh status   exit 0 when it runs, else 1
#   scripts/postgres.sh psql [ARGS...]   psql connected to the database
#                                `tideline` as `postgres` (ARGS as for psql;
#                                a later -d overrides the database)
#
# The server binaries are Debian's `postgresql` package (scripts/setup.sh
# installs it): the newest /usr/lib/postgresql/*/bin, or
# $TIDELINE_POSTGRES_BIN. Debian's own cluster (port 5432, /etc/postgresql) is
# not used nor touched.
#
# PostgreSQL refuses to run as root: run as root, this script makes the
# `postgres` OS user own the cluster and runs initdb, pg_ctl and the server
# as that user (runuser); run as another user, it runs them as that user.
# Clients (psql, pg_isready, tests) connect over TCP, as the database
# superuser `postgres`, without a password (trust, also for replication
# connections).
#
# Settings: wal_level=logical, max_replication_slots=20, max_wal_senders=20,
# listen_addresses='127.0.0.1', timezone UTC; fsync, synchronous_commit and
# full_page_writes off (a crash loses the cluster, which no one keeps), and
# wal_writer_delay=10ms, so that a commit reaches logical decoding at once
# all the same.
#
# Environment:
#   TIDELINE_POSTGRES_PORT           port, default 15432
#   TIDELINE_POSTGRES_DIR            the cluster's directory, default
#                                    ${TMPDIR:-/tmp}/tideline-postgres-PORT; its
#                                    data/ is the data directory, the directory
#                                    itself the Unix socket directory
#   TIDELINE_POSTGRES_BIN            directory of initdb, pg_ctl, postgres, psql
#   TIDELINE_POSTGRES_START_TIMEOUT  seconds to wait for the server, default 60
#
# Server log: TIDELINE_POSTGRES_DIR/postgres.log while it runs; stop copies
# it to ${TIDELINE_CACHE:-$HOME/.cache/tideline}/postgres-logs-PORT/postgres.log.
# Messages go to stderr; stdout has only the line above (and psql's output).
set -euo pipefail

PORT="${TIDELINE_POSTGRES_PORT:-15432}"
case "$PORT" in
  '' | *[!0-9]*) echo "postgres.sh: TIDELINE_POSTGRES_PORT must be a number, not '$PORT'" >&2; exit 2 ;;
esac
BASE="${TIDELINE_POSTGRES_DIR:-${TMPDIR:-/tmp}/tideline-postgres-$PORT}"
DATA="$BASE/data"
SERVER_LOG="$BASE/postgres.log"
CACHE_ROOT="${TIDELINE_CACHE:-$HOME/.cache/tideline}"
KEPT_LOG_DIR="$CACHE_ROOT/postgres-logs-$PORT"
START_TIMEOUT="${TIDELINE_POSTGRES_START_TIMEOUT:-60}"
DATABASE=tideline
URL="host=127.0.0.1 port=$PORT user=postgres dbname=$DATABASE"

say() { echo "postgres.sh: $*" >&2; }
die() { say "$*"; exit 1; }

# --- binaries -----------------------------------------------------------------

find_bin() {
  if [ -n "${TIDELINE_POSTGRES_BIN:-}" ]; then
    [ -x "$TIDELINE_POSTGRES_BIN/postgres" ] || die "no postgres in TIDELINE_POSTGRES_BIN=$TIDELINE_POSTGRES_BIN"
    echo "$TIDELINE_POSTGRES_BIN"
    return
  fi
  local newest
  # Version directories (15, 16, ...), newest last.
  newest="$(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V | tail -n 1)"
  if [ -n "$newest" ] && [ -x "$newest/postgres" ]; then
    echo "$newest"
    return
  fi
  if command -v postgres >/dev/null 2>&1; then
    dirname "$(readlink -f "$(command -v postgres)")"
    return
  fi
  die "no PostgreSQL server binaries in /usr/lib/postgresql/*/bin (scripts/setup.sh installs Debian's postgresql package)"
}

BIN=""
need_bin() { [ -n "$BIN" ] || BIN="$(find_bin)"; }

# --- running as the cluster's owner -------------------------------------------

# Runs "$@" as the user owning the cluster: `postgres` when this script runs
# as root, else this script's user. From / so that an unreadable working
# directory (root's home) does not bother initdb or pg_ctl.
as_owner() {
  if [ "$(id -u)" -eq 0 ]; then
    (cd / && runuser -u postgres -- "$@")
  else
    (cd / && "$@")
  fi
}

check_owner() {
  if [ "$(id -u)" -eq 0 ]; then
    id postgres >/dev/null 2>&1 \
      || die "running as root, and there is no 'postgres' OS user to run the server as (Debian's postgresql package creates it)"
    command -v runuser >/dev/null 2>&1 || die "running as root needs runuser (util-linux) to run the server as 'postgres'"
  fi
}

# --- the server -----------------------------------------------------------------

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# The postmaster's pid, from postmaster.pid, when that process is alive (not
# a zombie) and is this cluster's postmaster (not a pid the system reused).
postmaster_pid() {
  [ -f "$DATA/postmaster.pid" ] || return 1
  local pid state
  pid="$(head -n 1 "$DATA/postmaster.pid" 2>/dev/null)" || return 1
  case "$pid" in '' | *[!0-9]*) return 1 ;; esac
  state="$(ps -o stat= -p "$pid" 2>/dev/null)" || return 1
  case "$state" in Z*) return 1 ;; esac
  ps -o args= -p "$pid" 2>/dev/null | grep -qF -- "-D $DATA" || return 1
  echo "$pid"
}

running() { postmaster_pid >/dev/null; }

alive() {
  local state
  state="$(ps -o stat= -p "$1" 2>/dev/null)" || return 1
  case "$state" in Z*) return 1 ;; *) return 0 ;; esac
}

keep_log() {
  [ -f "$SERVER_LOG" ] || return 0
  if mkdir -p "$KEPT_LOG_DIR" 2>/dev/null; then
    cp "$SERVER_LOG" "$KEPT_LOG_DIR/postgres.log" 2>/dev/null || true
  fi
}

show_log() {
  say "last lines of $SERVER_LOG:"
  tail -n 30 "$SERVER_LOG" >&2 2>/dev/null || true
}

stop() {
  [ -e "$BASE" ] || return 0
  local pid
  if pid="$(postmaster_pid)"; then
    need_bin
    check_owner
    say "stopping the server on 127.0.0.1:$PORT (pid $pid)"
    if ! as_owner "$BIN/pg_ctl" stop -D "$DATA" -m fast -w -t 30 >/dev/null 2>&1; then
      say "fast shutdown failed: immediate shutdown"
      as_owner "$BIN/pg_ctl" stop -D "$DATA" -m immediate -w -t 30 >/dev/null 2>&1 || true
    fi
    if alive "$pid"; then
      say "the postmaster (pid $pid) is still there: SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      while alive "$pid"; do sleep 0.1; done
    fi
  elif [ -f "$DATA/postmaster.pid" ]; then
    say "the server of $DATA is gone (it did not shut down cleanly)"
  fi
  keep_log
  rm -rf "$BASE" || die "cannot delete $BASE (made by another user?)"
}

write_config() {
  # Later settings win: these override initdb's.
  cat >>"$DATA/postgresql.conf" <<EOF

# --- scripts/postgres.sh: a throwaway cluster for tests -----------------------
listen_addresses = '127.0.0.1'
port = $PORT
unix_socket_directories = '$BASE'
# Logical replication (change data capture tests and benchmarks).
wal_level = logical
max_replication_slots = 20
max_wal_senders = 20
# Speed over durability: a crash loses the cluster, which no one keeps.
fsync = off
synchronous_commit = off
full_page_writes = off
# A commit returns before its WAL is flushed, and logical decoding (a
# walsender, pg_logical_slot_*_changes) reads only flushed WAL, which the WAL
# writer flushes every wal_writer_delay: 200 ms by default, a delay each
# change data capture test would wait out.
wal_writer_delay = '10ms'
timezone = 'UTC'
log_timezone = 'UTC'
EOF
  write_tls
  cat >"$DATA/pg_hba.conf" <<EOF
# Written by scripts/postgres.sh: anyone on this machine, no password.
# TYPE  DATABASE     USER  ADDRESS        METHOD
local   all          all                  trust
host    all          all   127.0.0.1/32   trust
local   replication  all                  trust
host    replication  all   127.0.0.1/32   trust
EOF
}

# TLS, for the tests of sslmode=verify-full: a throwaway CA ($BASE/ca.pem,
# the file clients verify against) and a certificate for "localhost" signed
# by it. Plain connections still work (pg_hba's "host" lines take both).
write_tls() {
  if ! command -v openssl >/dev/null 2>&1; then
    say "no openssl: the cluster runs without TLS"
    return 0
  fi
  openssl req -x509 -newkey rsa:2048 -nodes -days 7 -subj "/CN=tideline test CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -keyout "$BASE/ca.key" -out "$BASE/ca.pem" >/dev/null 2>&1 || die "openssl: cannot make the test CA"
  openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" \
    -keyout "$BASE/server.key" -out "$BASE/server.csr" >/dev/null 2>&1 || die "openssl: cannot make the server key"
  printf 'subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n' >"$BASE/server.ext"
  openssl x509 -req -in "$BASE/server.csr" -CA "$BASE/ca.pem" -CAkey "$BASE/ca.key" -CAcreateserial \
    -days 7 -extfile "$BASE/server.ext" -out "$BASE/server.crt" >/dev/null 2>&1 || die "openssl: cannot sign the server certificate"
  mv "$BASE/server.crt" "$BASE/server.key" "$DATA/"
  chmod 0600 "$DATA/server.key"
  if [ "$(id -u)" -eq 0 ]; then
    chown postgres: "$DATA/server.crt" "$DATA/server.key"
  fi
  chmod 0644 "$BASE/ca.pem"
  printf "ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n" >>"$DATA/postgresql.conf"
}

start() {
  need_bin
  check_owner
  local t0=$EPOCHREALTIME

  if [ -e "$BASE" ]; then
    running && say "a cluster from an earlier run is still running on port $PORT: stopping it"
    stop
  fi
  if port_open "$PORT"; then
    die "127.0.0.1:$PORT is in use by another process (not a cluster of this script); set TIDELINE_POSTGRES_PORT to another port"
  fi

  mkdir -p "$BASE"
  # Others may connect through the socket in it; the data directory
  # itself is the owner's only (initdb makes it 0700).
  chmod 0755 "$BASE"
  local owner
  owner="$(id -un)"
  if [ "$(id -u)" -eq 0 ]; then
    owner=postgres
    chown postgres: "$BASE"
  fi
  if ! as_owner test -w "$BASE" -a -x "$BASE"; then
    rm -rf "$BASE"
    die "$BASE is not writable by the server's user, $owner (is a parent directory private?); set TIDELINE_POSTGRES_DIR"
  fi

  say "initdb $DATA ($("$BIN/postgres" --version))"
  if ! as_owner "$BIN/initdb" -D "$DATA" -U postgres -A trust -E UTF8 --locale=C --no-sync \
    >"$BASE/initdb.log" 2>&1; then
    cat "$BASE/initdb.log" >&2
    die "initdb failed"
  fi
  write_config

  say "starting PostgreSQL on 127.0.0.1:$PORT (log: $SERVER_LOG)"
  if ! as_owner "$BIN/pg_ctl" start -D "$DATA" -l "$SERVER_LOG" -w -t "$START_TIMEOUT" >/dev/null 2>"$BASE/pg_ctl.err"; then
    cat "$BASE/pg_ctl.err" >&2
    show_log
    stop
    die "pg_ctl start failed"
  fi
  # pg_ctl -w waits on the postmaster's own status; also wait until a client
  # gets an answer on the TCP port the tests use.
  local started=$SECONDS
  until "$BIN/pg_isready" -q -h 127.0.0.1 -p "$PORT" -U postgres -d postgres -t 2; do
    if [ $((SECONDS - started)) -ge "$START_TIMEOUT" ]; then
      show_log
      stop
      die "pg_isready got no answer within ${START_TIMEOUT}s"
    fi
    sleep 0.1
  done
  if ! "$BIN/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PORT" -U postgres -d postgres \
    -c "CREATE DATABASE $DATABASE" >&2; then
    show_log
    stop
    die "CREATE DATABASE $DATABASE failed"
  fi
  local ms=$(((${EPOCHREALTIME/./} - ${t0/./}) / 1000))
  say "ready after ${ms} ms"
  echo "TIDELINE_POSTGRES_URL=$URL"
}

status() {
  local pid
  if pid="$(postmaster_pid)"; then
    echo "postgres.sh: running on 127.0.0.1:$PORT ($DATA, pid $pid)"
  else
    echo "postgres.sh: not running on 127.0.0.1:$PORT"
    return 1
  fi
}

run_psql() {
  need_bin
  exec "$BIN/psql" -h 127.0.0.1 -p "$PORT" -U postgres -d "$DATABASE" "$@"
}

usage() {
  sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//' >&2
  exit 2
}

command="${1:-}"
[ $# -gt 0 ] && shift
case "$command" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  psql) run_psql "$@" ;;
  *) usage ;;
esac
