#!/bin/bash
set -euo pipefail
# Flags alone are arguments to postgres.
if [[ ${1:-} == -* ]]; then
	set -- postgres "$@"
fi
if [[ ${1:-} != postgres ]]; then
	exec "$@"
fi
if [[ $(id -u) == 0 ]]; then
	mkdir -p "$PGDATA"
	chown -R postgres:postgres "$PGDATA"
	chmod 700 "$PGDATA"
	exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" "$@"
fi

POSTGRES_USER=${POSTGRES_USER:-postgres}
POSTGRES_DB=${POSTGRES_DB:-$POSTGRES_USER}
auth=${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256}

if [[ ! -s $PGDATA/PG_VERSION ]]; then
	if [[ -z ${POSTGRES_PASSWORD:-} && $auth != trust ]]; then
		echo "Error: the database is uninitialized and POSTGRES_PASSWORD is not set." >&2
		echo "Set POSTGRES_PASSWORD to a non-empty value for the superuser, or POSTGRES_HOST_AUTH_METHOD=trust to allow every connection without one." >&2
		exit 1
	fi
	initdb --username="$POSTGRES_USER" --pwfile=<(printf '%s\n' "${POSTGRES_PASSWORD:-}") \
		--auth-local=trust --auth-host="$auth" ${POSTGRES_INITDB_ARGS:-} >/dev/null
	printf '\nhost all all all %s\n' "$auth" >>"$PGDATA/pg_hba.conf"
	printf "listen_addresses = '*'\n" >>"$PGDATA/postgresql.conf"

	# Set-up runs on a server that listens on the socket only.
	pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w start
	psql=(psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --no-password --no-psqlrc)
	if [[ $POSTGRES_DB != postgres ]]; then
		# Variables are interpolated only in input, not in -c.
		echo 'CREATE DATABASE :"db";' | "${psql[@]}" --dbname postgres --set db="$POSTGRES_DB" >/dev/null
	fi
	for f in /docker-entrypoint-initdb.d/*; do
		case $f in
		*.sh) . "$f" ;;
		*.sql) "${psql[@]}" --dbname "$POSTGRES_DB" -f "$f" ;;
		esac
	done
	pg_ctl -D "$PGDATA" -m fast -w stop
	echo "PostgreSQL init process complete; ready for start up."
fi
exec "$@"
