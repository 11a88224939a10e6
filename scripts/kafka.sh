#!/usr/bin/env bash
# A real single-node Apache Kafka broker (KRaft: broker and controller in one
# process) on 127.0.0.1, for the test suite (`kafka` feature). Used by
# scripts/test.sh; also handy by hand.
#
#   scripts/kafka.sh start     start it (stopping a broker an earlier, aborted
#                              run left on the port), wait until it answers a
#                              metadata request, print
#                              TIDELINE_KAFKA_BROKERS=127.0.0.1:PORT on stdout
#   scripts/kafka.sh stop      stop it and delete its data; does nothing when
#                              it is not running
#   scripts/kafka.sh status    exit 0 and print the pid when it runs, else 1
#   scripts/kafka.sh topics ARGS...           org.apache.kafka.tools.TopicCommand
#   scripts/kafka.sh produce TOPIC [ARGS...]  ConsoleProducer, lines from stdin
#   scripts/kafka.sh consume TOPIC [ARGS...]  ConsoleConsumer, from the beginning
#                              (the last three for debugging; they add
#                              --bootstrap-server)
#
# The jars come from Maven Central: `mvn dependency:copy-dependencies` of
# testing/kafka/pom.xml into $TIDELINE_CACHE/kafka-VERSION/libs (about 45 MB,
# plus Maven's copy in ~/.m2), once; a marker file with the pom's checksum
# says the copy is complete. Needs java (17 or later) and mvn
# (scripts/setup.sh installs them).
#
# Environment:
#   TIDELINE_KAFKA_PORT           broker port, default 19092; the controller
#                                 listens on PORT+1
#   TIDELINE_KAFKA_VERSION        default 4.1.1
#   TIDELINE_CACHE                default $HOME/.cache/tideline
#   TIDELINE_KAFKA_START_TIMEOUT  seconds to wait for the broker, default 90
#   KAFKA_HEAP_OPTS               default -Xms256m -Xmx768m
#
# Data (server.properties, log dirs, pid file): ${TMPDIR:-/tmp}/tideline-kafka-PORT,
# fresh at each start and deleted by stop. Broker log:
# $TIDELINE_CACHE/kafka-logs-PORT/server.log, emptied at each start and kept
# after stop. Messages go to stderr; stdout has only the line above (and the
# tools' output).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
POM="$ROOT/testing/kafka/pom.xml"
BROKER_LOG4J="$ROOT/testing/kafka/log4j2.properties"
TOOLS_LOG4J="$ROOT/testing/kafka/tools-log4j2.properties"

PORT="${TIDELINE_KAFKA_PORT:-19092}"
case "$PORT" in
  '' | *[!0-9]*) echo "kafka.sh: TIDELINE_KAFKA_PORT must be a number, not '$PORT'" >&2; exit 2 ;;
esac
CONTROLLER_PORT=$((PORT + 1))
BROKERS="127.0.0.1:$PORT"
VERSION="${TIDELINE_KAFKA_VERSION:-4.1.1}"
CACHE_ROOT="${TIDELINE_CACHE:-$HOME/.cache/tideline}"
LIBS="$CACHE_ROOT/kafka-$VERSION/libs"
MARKER="$LIBS/.complete"
LOG_DIR="$CACHE_ROOT/kafka-logs-$PORT"
RUN_DIR="${TMPDIR:-/tmp}/tideline-kafka-$PORT"
PID_FILE="$RUN_DIR/kafka.pid"
CONFIG="$RUN_DIR/server.properties"
START_TIMEOUT="${TIDELINE_KAFKA_START_TIMEOUT:-90}"
STOP_TIMEOUT=30

say() { echo "kafka.sh: $*" >&2; }
die() { say "$*"; exit 1; }

# --- jars -------------------------------------------------------------------

pom_sum() { echo "$VERSION $(sha256sum "$POM" | cut -d' ' -f1)"; }

libs_ready() { [ -f "$MARKER" ] && [ "$(cat "$MARKER")" = "$(pom_sum)" ]; }

fetch_jars() {
  libs_ready && return 0
  command -v mvn >/dev/null 2>&1 || die "mvn not found (scripts/setup.sh installs it)"
  mkdir -p "$(dirname "$LIBS")"
  # One fetch at a time, when several test runs start together.
  exec 9>"$(dirname "$LIBS")/.fetch.lock"
  flock 9
  if ! libs_ready; then
    say "fetching Kafka $VERSION jars from Maven Central into $LIBS"
    local partial="$LIBS.partial"
    rm -rf "$partial" "$LIBS"
    # Maven prints to stdout, which is for the TIDELINE_KAFKA_BROKERS line, so
    # its errors go to stderr; without the colour resets that Debian's Maven
    # 3.8 prints even with -q -B.
    if ! mvn -q -B -Dstyle.color=never -f "$POM" dependency:copy-dependencies \
      -Dkafka.version="$VERSION" -DoutputDirectory="$partial" 2>&1 \
      | sed -e 's/\x1b\[[0-9;]*m//g' -e '/^[[:space:]]*$/d' >&2; then
      rm -rf "$partial"
      die "mvn dependency:copy-dependencies failed"
    fi
    ls "$partial"/kafka_2.13-"$VERSION".jar >/dev/null \
      || { rm -rf "$partial"; die "no kafka_2.13-$VERSION.jar in the copied dependencies"; }
    pom_sum >"$partial/.complete"
    mv "$partial" "$LIBS"
  fi
  flock -u 9
  exec 9>&-
}

check_java() {
  command -v java >/dev/null 2>&1 || die "java not found (scripts/setup.sh installs it)"
  local version major
  version="$(java -version 2>&1 | sed -n 's/.* version "\([^"]*\)".*/\1/p' | head -n 1)"
  major="${version%%.*}"
  [ "$major" = 1 ] && major="$(echo "$version" | cut -d. -f2)"
  case "$major" in
    '' | *[!0-9]*) die "cannot read the Java version from 'java -version'" ;;
  esac
  [ "$major" -ge 17 ] || die "Kafka $VERSION needs Java 17 or later; java is $version"
}

# A Kafka tool: `tool CLASS ARGS...`. Small heap, quick start, warnings to stderr.
TOOL_JAVA=(java -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Djava.awt.headless=true
  -Dlog4j2.configurationFile="$TOOLS_LOG4J" -cp "$LIBS/*")
tool() { "${TOOL_JAVA[@]}" "$@"; }

# --- the broker process -------------------------------------------------------

# The pid in the pid file, when that process is alive and is this port's broker
# (not a pid the system reused since).
broker_pid() {
  [ -f "$PID_FILE" ] || return 1
  local pid state args
  pid="$(cat "$PID_FILE" 2>/dev/null)" || return 1
  case "$pid" in '' | *[!0-9]*) return 1 ;; esac
  state="$(ps -o stat= -p "$pid" 2>/dev/null)" || return 1
  case "$state" in Z*) return 1 ;; esac # a zombie has exited
  args="$(ps -o args= -p "$pid" 2>/dev/null)" || return 1
  case "$args" in *kafka.Kafka*"$CONFIG"*) echo "$pid" ;; *) return 1 ;; esac
}

alive() {
  local state
  state="$(ps -o stat= -p "$1" 2>/dev/null)" || return 1
  case "$state" in Z*) return 1 ;; *) return 0 ;; esac
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

show_log() {
  say "last lines of $LOG_DIR/server.log:"
  tail -n 40 "$LOG_DIR/server.log" >&2 2>/dev/null || true
  if [ -s "$LOG_DIR/kafka.out" ]; then
    say "last lines of $LOG_DIR/kafka.out (the JVM's stdout and stderr):"
    tail -n 20 "$LOG_DIR/kafka.out" >&2
  fi
}

stop() {
  local pid
  if pid="$(broker_pid)"; then
    say "stopping the broker on $BROKERS (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    local waited=0
    while alive "$pid" && [ "$waited" -lt $((STOP_TIMEOUT * 10)) ]; do
      sleep 0.1
      waited=$((waited + 1))
    done
    if alive "$pid"; then
      say "still running after ${STOP_TIMEOUT}s: SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      while alive "$pid"; do sleep 0.1; done
    fi
    # Reaps it when this shell started it (start failed); else a no-op.
    wait "$pid" 2>/dev/null || true
  fi
  rm -rf "$RUN_DIR"
}

write_config() {
  cat >"$CONFIG" <<EOF
# Written by scripts/kafka.sh: one node, broker and controller, for tests.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$PORT,CONTROLLER://127.0.0.1:$CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$PORT,CONTROLLER://127.0.0.1:$CONTROLLER_PORT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
log.dirs=$RUN_DIR/data

# Tests create their topics: a missing topic is an error, not a new topic.
auto.create.topics.enable=false
num.partitions=1
default.replication.factor=1
min.insync.replicas=1

# Internal topics: one replica, few partitions (quick to create).
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=4
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
share.coordinator.state.topic.num.partitions=4

# Tests write event times from 1970 as Kafka timestamps: time-based
# retention would delete their records at its first check (5 minutes
# after the broker starts), in the middle of a test.
log.retention.ms=-1

# Consumer groups start at once; transactions may last up to 15 minutes.
group.initial.rebalance.delay.ms=0
transaction.max.timeout.ms=900000

# A 2-core machine: fewer threads than the defaults (3 and 8).
num.network.threads=2
num.io.threads=4
EOF
}

start() {
  local pid
  check_java
  fetch_jars

  if pid="$(broker_pid)"; then
    say "a broker from an earlier run is still running (pid $pid): stopping it"
  fi
  stop

  local p
  for p in "$PORT" "$CONTROLLER_PORT"; do
    if port_open "$p"; then
      die "127.0.0.1:$p is in use by another process (not a broker of this script); set TIDELINE_KAFKA_PORT to another port"
    fi
  done

  mkdir -p "$RUN_DIR/data" "$LOG_DIR"
  rm -f "$LOG_DIR"/server.log* "$LOG_DIR/kafka.out"
  write_config

  local cluster_id
  cluster_id="$(tool kafka.tools.StorageTool random-uuid)" || die "kafka.tools.StorageTool random-uuid failed"
  tool kafka.tools.StorageTool format --cluster-id "$cluster_id" --config "$CONFIG" >"$RUN_DIR/format.out" 2>&1 \
    || { cat "$RUN_DIR/format.out" >&2; die "kafka.tools.StorageTool format failed"; }

  say "starting Kafka $VERSION on $BROKERS (log: $LOG_DIR/server.log)"
  # shellcheck disable=SC2086 # KAFKA_HEAP_OPTS holds several options
  nohup java ${KAFKA_HEAP_OPTS:--Xms256m -Xmx768m} \
    -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$BROKER_LOG4J" -Dkafka.logs.dir="$LOG_DIR" \
    -cp "$LIBS/*" kafka.Kafka "$CONFIG" \
    >"$LOG_DIR/kafka.out" 2>&1 </dev/null &
  pid=$!
  echo "$pid" >"$PID_FILE"

  # Ready when a metadata request (list topics) succeeds, not merely when the
  # port accepts connections.
  printf '%s\n' request.timeout.ms=5000 default.api.timeout.ms=10000 >"$RUN_DIR/tools.properties"
  local started=$SECONDS
  while :; do
    if ! alive "$pid"; then
      show_log
      stop
      die "the broker exited during start"
    fi
    if port_open "$PORT" \
      && timeout 30 "${TOOL_JAVA[@]}" org.apache.kafka.tools.TopicCommand --bootstrap-server "$BROKERS" \
        --command-config "$RUN_DIR/tools.properties" --list >"$RUN_DIR/ready.out" 2>&1; then
      break
    fi
    if [ $((SECONDS - started)) -ge "$START_TIMEOUT" ]; then
      show_log
      if [ -s "$RUN_DIR/ready.out" ]; then
        say "the last metadata request said:"
        tail -n 10 "$RUN_DIR/ready.out" >&2
      fi
      stop
      die "the broker did not answer within ${START_TIMEOUT}s"
    fi
    sleep 0.5
  done
  say "ready after $((SECONDS - started))s (pid $pid)"
  echo "TIDELINE_KAFKA_BROKERS=$BROKERS"
}

status() {
  local pid
  if pid="$(broker_pid)"; then
    echo "kafka.sh: running on $BROKERS (pid $pid)"
  else
    echo "kafka.sh: not running on $BROKERS"
    return 1
  fi
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
  topics)
    fetch_jars
    tool org.apache.kafka.tools.TopicCommand --bootstrap-server "$BROKERS" "$@"
    ;;
  produce)
    [ $# -ge 1 ] || usage
    fetch_jars
    topic="$1"
    shift
    tool org.apache.kafka.tools.ConsoleProducer --bootstrap-server "$BROKERS" --topic "$topic" "$@"
    ;;
  consume)
    [ $# -ge 1 ] || usage
    fetch_jars
    topic="$1"
    shift
    tool org.apache.kafka.tools.consumer.ConsoleConsumer --bootstrap-server "$BROKERS" --topic "$topic" \
      --from-beginning "$@"
    ;;
  *) usage ;;
esac
