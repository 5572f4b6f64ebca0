#!/usr/bin/env bash
# kafka.sh start|stop|status — a single-node Apache Kafka (KRaft, combined
# broker+controller) on loopback, for tests. No Docker: the broker jars come
# from Maven Central through mvn and run on the local JDK (17+).
#
#   scripts/kafka.sh start    fetch (once), format (once), start; prints KAFKA_BROKERS=...
#   scripts/kafka.sh stop     stop the broker and wait until it is gone
#   scripts/kafka.sh status   say whether it runs; exit 0 if it does, 3 if not
#   scripts/kafka.sh fetch    fetch the jars (once); prints KAFKA_LIBS=...
#
# Environment:
#   KAFKA_VERSION     broker version (default 4.1.1)
#   KAFKA_PORT        client port on 127.0.0.1 (default 9092)
#   KAFKA_CONTROLLER_PORT  controller port on 127.0.0.1 (default KAFKA_PORT+1)
#   KAFKA_CACHE_DIR   where the jars go (default $XDG_CACHE_HOME/postbox/kafka-VERSION)
#   KAFKA_DATA_DIR    log dirs, config, pid and log file (default /tmp/postbox-kafka-PORT)
#   KAFKA_START_TIMEOUT  seconds to wait for the broker (default 90)
#   KAFKA_HEAP_OPTS   JVM heap (default -Xms256m -Xmx768m)
set -euo pipefail

KAFKA_VERSION=${KAFKA_VERSION:-4.1.1}
LOG4J_VERSION=${LOG4J_VERSION:-2.25.3}
KAFKA_PORT=${KAFKA_PORT:-9092}
KAFKA_CONTROLLER_PORT=${KAFKA_CONTROLLER_PORT:-$((KAFKA_PORT + 1))}
KAFKA_CACHE_DIR=${KAFKA_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/postbox/kafka-$KAFKA_VERSION}
KAFKA_DATA_DIR=${KAFKA_DATA_DIR:-${TMPDIR:-/tmp}/postbox-kafka-$KAFKA_PORT}
KAFKA_START_TIMEOUT=${KAFKA_START_TIMEOUT:-90}
KAFKA_HEAP_OPTS=${KAFKA_HEAP_OPTS:--Xms256m -Xmx768m}

LIBS=$KAFKA_CACHE_DIR/libs
PID_FILE=$KAFKA_DATA_DIR/kafka.pid
LOG_FILE=$KAFKA_DATA_DIR/kafka.log
CONFIG=$KAFKA_DATA_DIR/server.properties
LOG4J_CONFIG=$KAFKA_DATA_DIR/log4j2.properties
BROKERS=127.0.0.1:$KAFKA_PORT

say() { echo "kafka.sh: $*" >&2; }
die() {
	say "$*"
	exit 1
}

# fetch copies kafka_2.13 and kafka-tools with their runtime dependencies,
# plus a log4j2 SLF4J binding, into $LIBS. It runs once per version; a partial fetch is discarded.
fetch() {
	[[ -f $LIBS/.complete ]] && compgen -G "$LIBS/kafka-tools-[0-9]*.jar" >/dev/null && return 0
	command -v mvn >/dev/null || die "mvn not found: install Maven (apt-get install maven)"
	command -v java >/dev/null || die "java not found: install a JDK 17+ (apt-get install openjdk-17-jre-headless)"
	say "fetching Kafka $KAFKA_VERSION jars from Maven Central into $LIBS"
	mkdir -p "$KAFKA_CACHE_DIR"
	# Kafka 4 logs through SLF4J 1.7 to Log4j 2, so the binding is
	# log4j-slf4j-impl (not the slf4j2 one).
	cat >"$KAFKA_CACHE_DIR/pom.xml" <<EOF
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>dev.postbox</groupId>
  <artifactId>kafka-broker-libs</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>$KAFKA_VERSION</version></dependency>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka-tools</artifactId><version>$KAFKA_VERSION</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-core</artifactId><version>$LOG4J_VERSION</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId><version>$LOG4J_VERSION</version></dependency>
  </dependencies>
</project>
EOF
	rm -rf "$LIBS.tmp"
	if ! mvn -q -B -f "$KAFKA_CACHE_DIR/pom.xml" dependency:copy-dependencies \
		-DincludeScope=runtime -DoutputDirectory="$LIBS.tmp" >"$KAFKA_CACHE_DIR/mvn.log" 2>&1; then
		tail -n 30 "$KAFKA_CACHE_DIR/mvn.log" >&2
		die "mvn could not fetch the Kafka jars (full log: $KAFKA_CACHE_DIR/mvn.log)"
	fi
	rm -rf "$LIBS"
	mv "$LIBS.tmp" "$LIBS"
	touch "$LIBS/.complete"
}

# configure writes the broker config and the log4j2 config into the data dir.
configure() {
	mkdir -p "$KAFKA_DATA_DIR/logs"
	cat >"$CONFIG" <<EOF
# Written by scripts/kafka.sh: one combined KRaft broker+controller for tests.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
log.dirs=$KAFKA_DATA_DIR/logs

# One node: every internal topic has one replica, so transactions and group
# coordination work.
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
num.partitions=12
default.replication.factor=1
auto.create.topics.enable=false
EOF
	cat >"$LOG4J_CONFIG" <<EOF
# Written by scripts/kafka.sh: broker logs go to stdout, which is $LOG_FILE.
rootLogger.level = INFO
rootLogger.appenderRef.stdout.ref = STDOUT
appender.stdout.type = Console
appender.stdout.name = STDOUT
appender.stdout.layout.type = PatternLayout
appender.stdout.layout.pattern = [%d] %p %m (%c)%n
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.state.name = state.change.logger
logger.state.level = WARN
EOF
}

# java_cmd sets JAVA_CMD to the JVM command line, up to the main class.
java_cmd() {
	# shellcheck disable=SC2206 # KAFKA_HEAP_OPTS holds several flags.
	JAVA_CMD=(java $KAFKA_HEAP_OPTS -XX:+UseG1GC -Djava.awt.headless=true
		-Dlog4j2.configurationFile="$LOG4J_CONFIG" -cp "$LIBS/*")
}

java_run() {
	java_cmd
	"${JAVA_CMD[@]}" "$@"
}

# format prepares KRaft storage once; a formatted data dir is reused.
format() {
	[[ -f $KAFKA_DATA_DIR/logs/meta.properties ]] && return 0
	local cluster_id
	cluster_id=$(java_run kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n 1)
	[[ -n $cluster_id ]] || die "kafka.tools.StorageTool random-uuid printed nothing"
	say "formatting KRaft storage in $KAFKA_DATA_DIR/logs (cluster $cluster_id)"
	java_run kafka.tools.StorageTool format --ignore-formatted \
		-t "$cluster_id" -c "$CONFIG" >"$KAFKA_DATA_DIR/format.log" 2>&1 ||
		{
			cat "$KAFKA_DATA_DIR/format.log" >&2
			die "formatting storage failed"
		}
}

# running succeeds when the pid file names a live broker process (and not
# another process that got the same pid later).
running() {
	[[ -f $PID_FILE ]] || return 1
	local pid
	pid=$(<"$PID_FILE")
	[[ -n $pid ]] && kill -0 "$pid" 2>/dev/null &&
		[[ $(ps -o args= -p "$pid" 2>/dev/null) == *kafka.Kafka* ]]
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$KAFKA_PORT") 2>/dev/null; }

# ready succeeds when the broker accepts connections and has logged that it
# started, which in KRaft mode happens only once it is unfenced.
ready() {
	port_open && grep -q 'Kafka Server started' "$LOG_FILE" 2>/dev/null
}

start() {
	if running; then
		ready || wait_ready
		say "already running (pid $(<"$PID_FILE"))"
		echo "KAFKA_BROKERS=$BROKERS"
		return 0
	fi
	if port_open; then
		die "127.0.0.1:$KAFKA_PORT is taken by another process; set KAFKA_PORT"
	fi
	fetch
	configure
	format
	say "starting Kafka $KAFKA_VERSION on $BROKERS (log: $LOG_FILE)"
	: >"$LOG_FILE"
	# setsid: the broker gets its own session, so it outlives this shell and
	# no signal meant for the caller's process group reaches it.
	java_cmd
	setsid "${JAVA_CMD[@]}" kafka.Kafka "$CONFIG" >>"$LOG_FILE" 2>&1 </dev/null &
	echo $! >"$PID_FILE"
	wait_ready
	echo "KAFKA_BROKERS=$BROKERS"
}

wait_ready() {
	local deadline=$((SECONDS + KAFKA_START_TIMEOUT))
	until ready; do
		if ! running; then
			tail -n 40 "$LOG_FILE" >&2 || true
			rm -f "$PID_FILE"
			die "the broker exited during startup (log: $LOG_FILE)"
		fi
		if ((SECONDS >= deadline)); then
			tail -n 40 "$LOG_FILE" >&2 || true
			stop
			die "the broker did not answer on $BROKERS within ${KAFKA_START_TIMEOUT}s (log: $LOG_FILE)"
		fi
		sleep 0.5
	done
}

stop() {
	if ! running; then
		rm -f "$PID_FILE"
		say "not running"
		return 0
	fi
	local pid i
	pid=$(<"$PID_FILE")
	say "stopping pid $pid"
	kill -TERM "$pid" 2>/dev/null || true
	# A clean shutdown takes a few seconds; after 30 s it is killed.
	for ((i = 0; i < 60; i++)); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.5
	done
	if kill -0 "$pid" 2>/dev/null; then
		say "pid $pid did not stop in 30s; killing it"
		kill -KILL "$pid" 2>/dev/null || true
		while kill -0 "$pid" 2>/dev/null; do sleep 0.2; done
	fi
	rm -f "$PID_FILE"
}

status() {
	if running && ready; then
		echo "running (pid $(<"$PID_FILE")) KAFKA_BROKERS=$BROKERS"
	elif running; then
		echo "starting (pid $(<"$PID_FILE"))"
	else
		echo "not running"
		return 3
	fi
}

case ${1:-} in
start) start ;;
stop) stop ;;
status) status ;;
fetch)
	fetch
	echo "KAFKA_LIBS=$LIBS"
	;;
*)
	echo "usage: $0 start|stop|status|fetch" >&2
	exit 2
	;;
esac
