#!/bin/bash
set -e
# Flags or a configuration file alone are arguments to redis-server.
if [[ ${1:-} == -* || ${1:-} == *.conf ]]; then
	set -- redis-server "$@"
fi
if [[ ${1:-} == redis-server ]]; then
	shift
	# Protected mode refuses every client from another container; the redis
	# image turns it off by default, and so does this one. A configuration
	# file (always the first argument) or a later flag can turn it back on.
	if [[ ${1:-} == *.conf ]]; then
		conf=$1
		shift
		set -- redis-server "$conf" --protected-mode no "$@"
	else
		set -- redis-server --protected-mode no "$@"
	fi
	if [[ $(id -u) == 0 ]]; then
		find . \! -user redis -exec chown redis '{}' +
		exec setpriv --reuid=redis --regid=redis --init-groups "$@"
	fi
fi
exec "$@"
