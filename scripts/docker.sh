#!/usr/bin/env bash
# docker.sh start|stop|status — a Docker engine on this machine for the
# container tests, publishing ports on 127.0.0.1 only.
#
#   scripts/docker.sh start    start dockerd unless an engine answers; prints TESTCONTAINERS_HOST_OVERRIDE=...
#                              (for an engine on this machine)
#   scripts/docker.sh stop     stop the dockerd this script started
#   scripts/docker.sh status   exit 0 if an engine answers, 3 if not
#
# The printed line tells testcontainers-go that published ports are on this
# machine's loopback: inside a container (a /.dockerenv file) it would
# otherwise look for them at the default gateway.
#
# Environment:
#   DOCKER_DATA_DIR   dockerd's pid and log file (default /tmp/postbox-docker)
#   DOCKER_START_TIMEOUT  seconds to wait for the engine (default 60)
set -euo pipefail

DOCKER_DATA_DIR=${DOCKER_DATA_DIR:-${TMPDIR:-/tmp}/postbox-docker}
DOCKER_START_TIMEOUT=${DOCKER_START_TIMEOUT:-60}
PID_FILE=$DOCKER_DATA_DIR/dockerd.pid
LOG_FILE=$DOCKER_DATA_DIR/dockerd.log

say() { echo "docker.sh: $*" >&2; }
die() {
	say "$*"
	exit 1
}

answers() { docker info >/dev/null 2>&1; }

start() {
	command -v docker >/dev/null || die "docker not found: apt-get install docker.io"
	if ! answers; then
		command -v dockerd >/dev/null || die "dockerd not found: apt-get install docker.io"
		[[ $(id -u) == 0 ]] || die "dockerd needs root; start the engine yourself (systemctl start docker)"
		mkdir -p "$DOCKER_DATA_DIR"
		say "starting dockerd (log: $LOG_FILE)"
		# --ip: ports a container publishes without an address bind to
		# loopback, never to every interface.
		setsid dockerd --ip=127.0.0.1 --pidfile="$PID_FILE" >>"$LOG_FILE" 2>&1 </dev/null &
		local deadline=$((SECONDS + DOCKER_START_TIMEOUT))
		until answers; do
			if ((SECONDS >= deadline)); then
				tail -n 30 "$LOG_FILE" >&2 || true
				die "dockerd did not answer within ${DOCKER_START_TIMEOUT}s"
			fi
			sleep 0.5
		done
	fi
	# An engine elsewhere (DOCKER_HOST over TCP) publishes its ports there.
	if [[ -z ${DOCKER_HOST:-} || ${DOCKER_HOST:-} == unix://* ]]; then
		echo "TESTCONTAINERS_HOST_OVERRIDE=127.0.0.1"
	fi
}

stop() {
	[[ -f $PID_FILE ]] || {
		say "no dockerd started by this script"
		return 0
	}
	local pid
	pid=$(<"$PID_FILE")
	kill -TERM "$pid" 2>/dev/null || true
	while kill -0 "$pid" 2>/dev/null; do sleep 0.2; done
	rm -f "$PID_FILE"
}

case ${1:-} in
start) start ;;
stop) stop ;;
status) answers || exit 3 ;;
*)
	echo "usage: $0 start|stop|status" >&2
	exit 2
	;;
esac
