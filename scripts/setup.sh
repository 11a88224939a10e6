#!/usr/bin/env bash
# Installs the system packages the whole test suite (every Cargo feature)
# needs, when they are missing. Safe to run again: it installs nothing when
# everything is there. Used by scripts/test.sh and .ci/run.
#
# Today: libclang and clang, for the `rocksdb` feature (librocksdb-sys builds
# RocksDB from C++ sources and runs bindgen, which loads libclang); a Java
# runtime and Maven for the Kafka broker the `kafka` feature's tests run
# against (scripts/kafka.sh fetches the broker's jars with Maven); Debian's
# PostgreSQL server and clients for the cluster the `postgres` feature's tests
# and benchmarks run against (scripts/postgres.sh); Debian's Chromium, which
# the `web` feature's browser test drives headless over the DevTools protocol.
# Later features add their packages here, in one place.
set -euo pipefail

# apt-get as root, or through sudo when there is one.
apt_install() {
  local sudo=""
  if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then
    sudo="sudo"
  fi
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq "$@" >/dev/null
}

# libclang for bindgen, clang for RocksDB's C++ build.
if ! ls /usr/lib/llvm-*/lib/libclang*.so* >/dev/null 2>&1 || ! command -v clang >/dev/null 2>&1; then
  echo "setup: installing libclang-dev clang (for the rocksdb feature)"
  apt_install libclang-dev clang
fi

# Java (Kafka 4 needs 17 or later) and Maven, for scripts/kafka.sh.
if ! command -v java >/dev/null 2>&1 || ! command -v mvn >/dev/null 2>&1; then
  echo "setup: installing openjdk-17-jre-headless maven (for the Kafka broker of the kafka feature's tests)"
  apt_install openjdk-17-jre-headless maven
fi

# PostgreSQL server and client binaries (/usr/lib/postgresql/VERSION/bin:
# initdb, pg_ctl, postgres, pg_isready, psql, and pg_recvlogical, which the
# CDC benchmark reads a slot with), for scripts/postgres.sh. Debian's package
# also creates a cluster of its own (/etc/postgresql/VERSION/main, port 5432)
# and starts it where services can start (not in a container whose
# policy-rc.d forbids it). We do not use that cluster: scripts/postgres.sh
# makes a private one on another port. Whether it runs or not, it is the
# system's: leave it alone.
if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
  echo "setup: installing postgresql (for the PostgreSQL cluster of the postgres feature's tests)"
  apt_install postgresql
fi

# openssl, for the test cluster's TLS certificates (scripts/postgres.sh).
if ! command -v openssl >/dev/null 2>&1; then
  echo "setup: installing openssl (for the PostgreSQL test cluster's TLS certificates)"
  apt_install openssl
fi

# Chromium, for the web UI's browser test (web/tests/browser.rs opens the
# live page of a running job in it, headless).
if ! command -v chromium >/dev/null 2>&1; then
  echo "setup: installing chromium (for the web feature's browser test)"
  apt_install chromium
fi
