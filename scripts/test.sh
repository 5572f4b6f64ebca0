#!/usr/bin/env bash
# Runs the whole test suite: formatting, vet, every test with the race
# detector, the host simulation's 1,000 seeds, and each fuzz target
# briefly. Tests that need Kafka, Redis or PostgreSQL read KAFKA_BROKERS,
# REDIS_ADDR and POSTGRES_DSN; without them they skip (or fail under
# CI=true).
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
# The host simulation's CI set without the race detector: 1,000 seeded
# runs, over a million message lifecycles (under -race it runs 30).
go test -count=1 -timeout 10m -v -run '^TestSimulation$' ./simulation/
# Every fuzz target for a few seconds (FUZZTIME).
FUZZTIME=${FUZZTIME:-3s} scripts/fuzz.sh
