#!/usr/bin/env bash
# Runs the whole test suite: formatting, vet, and every test with the race
# detector. Tests that need Kafka, Redis or PostgreSQL read KAFKA_BROKERS,
# REDIS_ADDR and POSTGRES_DSN; without them they skip (or fail under CI=true).
set -euo pipefail
cd "$(dirname "$0")/.."

unformatted=$(gofmt -l .)
if [ -n "$unformatted" ]; then
	echo "gofmt needed on:" >&2
	echo "$unformatted" >&2
	exit 1
fi
go vet ./...
go test -race -count=1 -timeout 30m "$@" ./...
