#!/usr/bin/env bash
# test.sh — the whole test suite: formatting, vet, every test with the race
# detector, the host simulation's 1,000 seeds, and each fuzz target briefly.
#
#   scripts/test.sh [go test flags]   everything
#   scripts/test.sh containers        the service tests again, every service
#                                     started by testcontainers-go
#
# The tests that need Kafka, Redis or PostgreSQL read KAFKA_BROKERS,
# REDIS_ADDR and POSTGRES_DSN. What is not set, this script provides:
#   - where a Docker engine runs (or dockerd is installed and this is root:
#     scripts/docker.sh starts it), testcontainers-go starts each service,
#     on the local images of scripts/images.sh where debootstrap is
#     installed (else on the official images, from a registry); the
#     container tests (compose deployment, Kafka cluster) run too;
#   - without Docker, it starts the loopback services whose programs are
#     installed (scripts/services.sh, scripts/kafka.sh), and stops them
#     after.
# Tests that still find no service skip (under CI=true they fail); the run
# ends by counting them and naming the command that gets what they need.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { echo "test.sh: $*" >&2; }

started=()
cleanup() {
	local s
	for s in "${started[@]}"; do
		case $s in
		kafka) scripts/kafka.sh stop >&2 || true ;;
		*) scripts/services.sh stop "$s" >&2 || true ;;
		esac
	done
}
trap cleanup EXIT

# docker_ready starts or finds a Docker engine and names the images.
docker_ready() {
	[[ -z ${POSTBOX_NO_DOCKER:-} ]] || return 1
	command -v docker >/dev/null || return 1
	local engine
	if ! docker info >/dev/null 2>&1; then
		command -v dockerd >/dev/null && [[ $(id -u) == 0 ]] || return 1
	fi
	engine=$(scripts/docker.sh start) || return 1
	if [[ -n $engine ]]; then
		eval "$engine"
		export TESTCONTAINERS_HOST_OVERRIDE
	fi
	if [[ -z ${POSTBOX_KAFKA_IMAGE:-} ]] && command -v debootstrap >/dev/null && [[ $(id -u) == 0 ]]; then
		local images
		images=$(scripts/images.sh) || return 1
		eval "$images"
		export POSTBOX_KAFKA_IMAGE POSTBOX_REDIS_IMAGE POSTBOX_POSTGRES_IMAGE POSTBOX_GO_IMAGE \
			POSTBOX_RUNTIME_IMAGE TESTCONTAINERS_HUB_IMAGE_NAME_PREFIX
		say "Docker: testcontainers-go starts what is not set, on the local images ($POSTBOX_KAFKA_IMAGE, …)"
	else
		say "Docker: testcontainers-go starts what is not set, on ${POSTBOX_KAFKA_IMAGE:-the official images}"
	fi
}

# loopback starts the services whose programs are installed, for the
# variables that are not set.
loopback() {
	local out
	if [[ -z ${REDIS_ADDR:-} ]] && command -v redis-server >/dev/null; then
		if ! scripts/services.sh status redis >/dev/null 2>&1; then started+=(redis); fi
		out=$(scripts/services.sh start redis) && eval "$out" && export REDIS_ADDR
	fi
	if [[ -z ${POSTGRES_DSN:-} ]] && compgen -G "/usr/lib/postgresql/*/bin/postgres" >/dev/null; then
		if ! scripts/services.sh status postgres >/dev/null 2>&1; then started+=(postgres); fi
		out=$(scripts/services.sh start postgres) && eval "$out" && export POSTGRES_DSN
	fi
	if [[ -z ${KAFKA_BROKERS:-} ]] && command -v java >/dev/null && command -v mvn >/dev/null; then
		if ! scripts/kafka.sh status >/dev/null 2>&1; then started+=(kafka); fi
		out=$(scripts/kafka.sh start) && eval "$out" && export KAFKA_BROKERS
	fi
	say "loopback services: REDIS_ADDR=${REDIS_ADDR:-unset} POSTGRES_DSN=${POSTGRES_DSN:-unset} KAFKA_BROKERS=${KAFKA_BROKERS:-unset}"
}

# service_packages lists the packages whose tests use a real service.
service_packages() {
	go list -f '{{.ImportPath}} {{join .Imports " "}} {{join .TestImports " "}} {{join .XTestImports " "}}' ./... |
		awk '/postbox\/internal\/testenv/ && $1 !~ /internal\/testenv$/ { print $1 }'
}

skipped=0
report() {
	local file
	file=$(mktemp)
	# The container tests' own lines say what they checked: always shown.
	go test -json "$@" | go run ./internal/tools/testreport -skips "$file" \
		-show '^(TestComposeDeploymentSurvivesAKill|TestKafkaClusterUnderFaults)$'
	skipped=$((skipped + $(<"$file")))
	rm -f "$file"
}

if [[ ${1:-} == containers ]]; then
	shift
	unset KAFKA_BROKERS REDIS_ADDR POSTGRES_DSN
	docker_ready || {
		say "no Docker engine: install docker.io (apt-get install docker.io) or start one"
		exit 1
	}
	# Left out: the container tests, which start containers of their own
	# and ran already, and the tests that restart a loopback server with
	# scripts/services.sh or run a broker of their own with scripts/kafka.sh
	# (restarts of containers are the cluster test's).
	own='TestComposeDeploymentSurvivesAKill|TestKafkaClusterUnderFaults|TestRedisRestartLosesNothing|TestPostgresRestartWorkersContinue|TestKafkaBrokerRestart'
	mapfile -t pkgs < <(service_packages)
	report -count=1 -timeout 30m -skip "^($own)\$" "$@" "${pkgs[@]}"
	exit 0
fi

unformatted=$(gofmt -l .)
if [ -n "$unformatted" ]; then
	echo "gofmt needed on:" >&2
	echo "$unformatted" >&2
	exit 1
fi
go vet ./...

if [[ -z ${KAFKA_BROKERS:-} || -z ${REDIS_ADDR:-} || -z ${POSTGRES_DSN:-} ]]; then
	docker_ready || loopback
fi

report -race -count=1 -timeout 30m "$@" ./...
# The host simulation's CI set without the race detector: 1,000 seeded
# runs, over a million message lifecycles (under -race it runs 30).
go test -count=1 -timeout 10m -v -run '^TestSimulation$' ./simulation/
# Every fuzz target for a few seconds (FUZZTIME).
FUZZTIME=${FUZZTIME:-3s} scripts/fuzz.sh

if ((skipped > 0)); then
	say "$skipped tests skipped: they found no service (see the reasons above)."
	say "Install the Docker engine and debootstrap, then run this script again as root:"
	say "  sudo apt-get install -y docker.io docker-compose debootstrap"
else
	say "every test ran; none skipped"
fi
