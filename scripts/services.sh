#!/usr/bin/env bash
# services.sh start|stop|status [redis] [postgres] — Redis and PostgreSQL on
# loopback, for tests. No Docker: the servers are Debian's packages, run by
# hand as background daemons with their data, pid and log files in one state
# directory. With no service named, the command applies to both.
#
#   scripts/services.sh start [redis|postgres]   start (idempotent); prints
#       REDIS_ADDR=127.0.0.1:6379
#       POSTGRES_DSN=postgres://postbox@127.0.0.1:5432/postbox?sslmode=disable
#   scripts/services.sh stop [redis|postgres]    stop and wait until gone
#   scripts/services.sh status [redis|postgres]  exit 0 if all named run, 3 if not
#
# Use the printed lines as environment for the tests, e.g.
#   eval "$(scripts/services.sh start)" && export REDIS_ADDR POSTGRES_DSN
#
# A missing redis-server is installed with apt-get (as root), and so is a
# missing PostgreSQL server. PostgreSQL refuses to run as root, so as root
# the cluster belongs to, and runs as, the `postgres` OS user (created if
# missing); the state directory must then be reachable by that user.
#
# Environment:
#   POSTBOX_SERVICES_DIR   state directory (default /tmp/postbox-services)
#   REDIS_PORT             Redis port on 127.0.0.1 (default 6379)
#   REDIS_APPENDFSYNC      always (default), everysec, no, or off (no AOF at
#                          all). Only `always` makes an acknowledged write
#                          survive power loss; see journal/redis.
#   POSTGRES_PORT          PostgreSQL port on 127.0.0.1 (default 5432)
#   POSTGRES_BIN           directory of initdb/pg_ctl/postgres (default: the
#                          newest /usr/lib/postgresql/*/bin, else $PATH)
#   SERVICES_START_TIMEOUT seconds to wait for a server to answer (default 30)
set -euo pipefail

STATE_DIR=${POSTBOX_SERVICES_DIR:-/tmp/postbox-services}
REDIS_PORT=${REDIS_PORT:-6379}
REDIS_APPENDFSYNC=${REDIS_APPENDFSYNC:-always}
POSTGRES_PORT=${POSTGRES_PORT:-5432}
START_TIMEOUT=${SERVICES_START_TIMEOUT:-30}

REDIS_DIR=$STATE_DIR/redis-$REDIS_PORT
REDIS_PID=$REDIS_DIR/redis.pid
REDIS_LOG=$REDIS_DIR/redis.log
PG_DIR=$STATE_DIR/postgres-$POSTGRES_PORT
PG_DATA=$PG_DIR/data
PG_LOG=$PG_DIR/postgres.log
PG_SOCKET_DIR=$PG_DIR # the socket lives beside the data, not in /var/run

say() { echo "services.sh: $*" >&2; }
die() {
	say "$*"
	exit 1
}

is_root() { [[ $(id -u) -eq 0 ]]; }

# apt_install installs Debian packages, as root only.
apt_install() {
	is_root || die "$* missing and not root: install with: sudo apt-get install -y $*"
	command -v apt-get >/dev/null || die "$* missing and apt-get not found: install $* by hand"
	say "installing $* with apt-get (not found on this machine)"
	local log=$STATE_DIR/apt-get.log
	mkdir -p "$STATE_DIR"
	if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@"; } >"$log" 2>&1; then
		tail -n 20 "$log" >&2
		die "apt-get install $* failed (full log: $log)"
	fi
}

# pid_alive reports whether the pid in file $1 names a running process.
pid_alive() {
	local pid
	[[ -s $1 ]] || return 1
	pid=$(head -n 1 "$1")
	[[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null
}

# wait_for runs "$@" until it succeeds or START_TIMEOUT seconds pass.
wait_for() {
	local deadline=$((SECONDS + START_TIMEOUT))
	until "$@" >/dev/null 2>&1; do
		((SECONDS < deadline)) || return 1
		sleep 0.2
	done
}

# wait_gone waits until the process in pid file $1 exits, up to $2 seconds.
wait_gone() {
	local deadline=$((SECONDS + $2))
	while pid_alive "$1"; do
		((SECONDS < deadline)) || return 1
		sleep 0.2
	done
}

# ---------------------------------------------------------------- Redis

redis_ping() { [[ $(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null) == PONG ]]; }

redis_start() {
	if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then
		apt_install redis-server redis-tools
		# Debian's package starts its own server on 6379 where an init
		# system runs; ours must own the port.
		if command -v service >/dev/null && service redis-server status >/dev/null 2>&1; then
			say "stopping the redis-server service the package started"
			service redis-server stop >/dev/null 2>&1 || true
		fi
	fi
	local fsync=$REDIS_APPENDFSYNC aof=yes
	case $fsync in
	always | everysec | no) ;;
	off) aof=no fsync=everysec ;;
	*) die "REDIS_APPENDFSYNC=$fsync: use always, everysec, no or off" ;;
	esac

	mkdir -p "$REDIS_DIR"
	if pid_alive "$REDIS_PID" && redis_ping; then
		local running
		running=$(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" config get appendfsync 2>/dev/null | tail -n 1)
		say "redis already running (pid $(cat "$REDIS_PID"), appendfsync $running)"
		echo "REDIS_ADDR=127.0.0.1:$REDIS_PORT"
		return
	fi
	if redis_ping; then
		die "port $REDIS_PORT answers as Redis, but not a server started here ($REDIS_PID): stop it or set REDIS_PORT"
	fi
	rm -f "$REDIS_PID"
	redis-server --daemonize yes \
		--bind 127.0.0.1 --port "$REDIS_PORT" --protected-mode yes \
		--dir "$REDIS_DIR" --pidfile "$REDIS_PID" --logfile "$REDIS_LOG" \
		--appendonly "$aof" --appendfsync "$fsync" --save '' \
		>"$REDIS_DIR/redis-start.out" 2>&1 || {
		cat "$REDIS_DIR/redis-start.out" >&2
		die "redis-server did not start (log: $REDIS_LOG)"
	}
	if ! wait_for redis_ping; then
		tail -n 20 "$REDIS_LOG" >&2
		die "redis did not answer PING on 127.0.0.1:$REDIS_PORT within ${START_TIMEOUT}s (log: $REDIS_LOG)"
	fi
	local mode="appendonly yes, appendfsync $fsync"
	[[ $aof == yes ]] || mode="AOF off"
	say "redis started on 127.0.0.1:$REDIS_PORT ($mode; log $REDIS_LOG)"
	echo "REDIS_ADDR=127.0.0.1:$REDIS_PORT"
}

redis_stop() {
	if ! pid_alive "$REDIS_PID"; then
		rm -f "$REDIS_PID"
		say "redis on port $REDIS_PORT is not running"
		return
	fi
	local pid
	pid=$(cat "$REDIS_PID")
	# SHUTDOWN flushes the AOF; SIGTERM does the same if the client fails.
	redis-cli -h 127.0.0.1 -p "$REDIS_PORT" shutdown >/dev/null 2>&1 || kill -TERM "$pid" 2>/dev/null || true
	if ! wait_gone "$REDIS_PID" "$START_TIMEOUT"; then
		say "redis (pid $pid) did not exit within ${START_TIMEOUT}s; killing it"
		kill -KILL "$pid" 2>/dev/null || true
		wait_gone "$REDIS_PID" 5 || die "redis (pid $pid) survived SIGKILL"
	fi
	rm -f "$REDIS_PID"
	say "redis stopped"
}

redis_status() {
	if pid_alive "$REDIS_PID" && redis_ping; then
		say "redis running on 127.0.0.1:$REDIS_PORT (pid $(cat "$REDIS_PID"))"
		return 0
	fi
	say "redis not running"
	return 3
}

# ----------------------------------------------------------- PostgreSQL

find_pg_bin() {
	if [[ -n ${POSTGRES_BIN:-} ]]; then
		[[ -x $POSTGRES_BIN/pg_ctl ]] || die "POSTGRES_BIN=$POSTGRES_BIN has no pg_ctl"
		return
	fi
	local d
	for d in $(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V -r); do
		if [[ -x $d/pg_ctl && -x $d/initdb && -x $d/postgres ]]; then
			POSTGRES_BIN=$d
			return
		fi
	done
	if command -v pg_ctl >/dev/null && command -v initdb >/dev/null; then
		POSTGRES_BIN=$(dirname "$(command -v pg_ctl)")
		return
	fi
	return 1
}

# as_pg runs a command as the cluster's owner: the postgres OS user when
# we are root (PostgreSQL refuses root), else ourselves.
as_pg() {
	if is_root; then
		runuser -u postgres -- "$@"
	else
		"$@"
	fi
}

pg_ready() {
	local isready=pg_isready
	[[ -x $POSTGRES_BIN/pg_isready ]] && isready=$POSTGRES_BIN/pg_isready
	"$isready" -q -h 127.0.0.1 -p "$POSTGRES_PORT"
}

# psql_admin runs SQL as the cluster's superuser over the private socket.
psql_admin() {
	as_pg psql -X -q -v ON_ERROR_STOP=1 -h "$PG_SOCKET_DIR" -p "$POSTGRES_PORT" -U postgres -d "${2:-postgres}" -tAc "$1"
}

pg_start() {
	if ! find_pg_bin; then
		apt_install postgresql
		find_pg_bin || die "PostgreSQL installed, but no pg_ctl/initdb found: set POSTGRES_BIN"
	fi
	command -v psql >/dev/null || apt_install postgresql-client
	if is_root && ! id postgres >/dev/null 2>&1; then
		say "creating the postgres OS user to run the server (it refuses root)"
		useradd --system --user-group --home-dir /var/lib/postgresql --shell /bin/bash postgres
	fi

	mkdir -p "$PG_DIR"
	if is_root; then
		chown postgres: "$PG_DIR"
		chmod 0700 "$PG_DIR"
		runuser -u postgres -- test -w "$PG_DIR" ||
			die "$PG_DIR is not reachable by the postgres user: set POSTBOX_SERVICES_DIR to a directory it can reach (e.g. under /tmp)"
	fi

	if as_pg "$POSTGRES_BIN/pg_ctl" -D "$PG_DATA" status >/dev/null 2>&1; then
		if pg_ready; then
			say "postgres already running (data $PG_DATA)"
			pg_create_db
			echo "POSTGRES_DSN=postgres://postbox@127.0.0.1:$POSTGRES_PORT/postbox?sslmode=disable"
			return
		fi
	elif pg_ready; then
		die "port $POSTGRES_PORT answers as PostgreSQL, but not a server started here ($PG_DATA): stop it or set POSTGRES_PORT"
	fi

	if [[ ! -s $PG_DATA/PG_VERSION ]]; then
		rm -rf "$PG_DATA"
		say "initdb $PG_DATA ($("$POSTGRES_BIN/postgres" --version))"
		if ! as_pg "$POSTGRES_BIN/initdb" -D "$PG_DATA" -U postgres --auth=trust \
			--encoding=UTF8 --locale=C >"$PG_DIR/initdb.log" 2>&1; then
			tail -n 20 "$PG_DIR/initdb.log" >&2
			die "initdb failed (log: $PG_DIR/initdb.log)"
		fi
		# Loopback only, trust there and on the private socket: a test
		# server, never reachable from another host.
		cat >"$PG_DATA/pg_hba.conf" <<EOF
# Written by scripts/services.sh: a test server on loopback only.
local all all              trust
host  all all 127.0.0.1/32 trust
host  all all ::1/128      trust
EOF
		cat >>"$PG_DATA/postgresql.conf" <<EOF

# Written by scripts/services.sh.
listen_addresses = '127.0.0.1'
unix_socket_directories = '$PG_SOCKET_DIR'
max_connections = 200
shared_buffers = 128MB
EOF
		is_root && chown postgres: "$PG_DATA/pg_hba.conf" "$PG_DATA/postgresql.conf"
	fi

	# pg_ctl -w waits until the server accepts connections or -t passes.
	if ! as_pg "$POSTGRES_BIN/pg_ctl" -D "$PG_DATA" -l "$PG_LOG" -w -t "$START_TIMEOUT" \
		-o "-p $POSTGRES_PORT" start >/dev/null 2>&1; then
		tail -n 20 "$PG_LOG" >&2 || true
		die "postgres did not start within ${START_TIMEOUT}s (log: $PG_LOG)"
	fi
	if ! wait_for pg_ready; then
		tail -n 20 "$PG_LOG" >&2
		die "postgres did not answer pg_isready on 127.0.0.1:$POSTGRES_PORT within ${START_TIMEOUT}s (log: $PG_LOG)"
	fi
	pg_create_db
	say "postgres started on 127.0.0.1:$POSTGRES_PORT (data $PG_DATA, log $PG_LOG)"
	echo "POSTGRES_DSN=postgres://postbox@127.0.0.1:$POSTGRES_PORT/postbox?sslmode=disable"
}

# pg_create_db creates the postbox role and database if they are missing.
pg_create_db() {
	if [[ $(psql_admin "SELECT 1 FROM pg_roles WHERE rolname = 'postbox'") != 1 ]]; then
		psql_admin "CREATE ROLE postbox LOGIN"
	fi
	if [[ $(psql_admin "SELECT 1 FROM pg_database WHERE datname = 'postbox'") != 1 ]]; then
		psql_admin "CREATE DATABASE postbox OWNER postbox"
	fi
}

pg_stop() {
	if ! find_pg_bin || [[ ! -s $PG_DATA/PG_VERSION ]]; then
		say "postgres on port $POSTGRES_PORT is not running"
		return
	fi
	if ! as_pg "$POSTGRES_BIN/pg_ctl" -D "$PG_DATA" status >/dev/null 2>&1; then
		say "postgres on port $POSTGRES_PORT is not running"
		return
	fi
	if ! as_pg "$POSTGRES_BIN/pg_ctl" -D "$PG_DATA" -m fast -w -t "$START_TIMEOUT" stop >/dev/null 2>&1; then
		say "postgres did not stop within ${START_TIMEOUT}s; stopping it immediately"
		as_pg "$POSTGRES_BIN/pg_ctl" -D "$PG_DATA" -m immediate -w -t 10 stop >/dev/null 2>&1 ||
			die "postgres (data $PG_DATA) did not stop"
	fi
	say "postgres stopped"
}

pg_status() {
	if find_pg_bin && [[ -s $PG_DATA/PG_VERSION ]] &&
		as_pg "$POSTGRES_BIN/pg_ctl" -D "$PG_DATA" status >/dev/null 2>&1 && pg_ready; then
		say "postgres running on 127.0.0.1:$POSTGRES_PORT (data $PG_DATA)"
		return 0
	fi
	say "postgres not running"
	return 3
}

# ----------------------------------------------------------------- main

usage() {
	sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
	exit 2
}

[[ $# -ge 1 ]] || usage
cmd=$1
shift
services=("$@")
[[ ${#services[@]} -gt 0 ]] || services=(redis postgres)
for s in "${services[@]}"; do
	case $s in
	redis | postgres) ;;
	*) die "unknown service $s: use redis or postgres" ;;
	esac
done

rc=0
case $cmd in
start)
	for s in "${services[@]}"; do
		case $s in
		redis) redis_start ;;
		postgres) pg_start ;;
		esac
	done
	;;
stop)
	for s in "${services[@]}"; do
		case $s in
		redis) redis_stop ;;
		postgres) pg_stop ;;
		esac
	done
	;;
status)
	for s in "${services[@]}"; do
		case $s in
		redis) redis_status || rc=3 ;;
		postgres) pg_status || rc=3 ;;
		esac
	done
	;;
*) usage ;;
esac
exit $rc
