#!/usr/bin/env bash
# images.sh — builds, from Debian's packages and Maven Central alone, the
# container images the tests and docker-compose.yml use, for machines that
# reach no container registry. They behave as the official images do (same
# ports, variables, entrypoints and readiness lines; see deploy/images/) and
# are tagged under postbox.local/, never under an official name.
#
#   scripts/images.sh          build what is missing or changed; print NAME=value lines
#   scripts/images.sh names    print the NAME=value lines only
#
# Each image carries a hash of what it was built from, so a second run
# rebuilds nothing that has not changed. The printed lines point the tests
# (internal/testenv), the compose file and testcontainers-go at these images:
#
#   eval "$(scripts/images.sh)"; export POSTBOX_KAFKA_IMAGE POSTBOX_REDIS_IMAGE \
#     POSTBOX_POSTGRES_IMAGE POSTBOX_GO_IMAGE POSTBOX_RUNTIME_IMAGE TESTCONTAINERS_HUB_IMAGE_NAME_PREFIX
#
# Unset, those names default to the official images.
#
# Environment:
#   DEBIAN_SUITE    base system (default bookworm)
#   DEBIAN_MIRROR   where debootstrap fetches it (default http://deb.debian.org/debian)
#   IMAGES_CACHE    work folder (default $XDG_CACHE_HOME/postbox/images)
# Needs: docker (a running engine), debootstrap (as root), go, and for the
# Kafka jars what scripts/kafka.sh needs (java, mvn).
set -euo pipefail
cd "$(dirname "$0")/.."

PREFIX=postbox.local
DEBIAN_SUITE=${DEBIAN_SUITE:-bookworm}
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
IMAGES_CACHE=${IMAGES_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/postbox/images}
KAFKA_VERSION=${KAFKA_VERSION:-4.1.1}
LABEL=dev.postbox.images.content
export DOCKER_BUILDKIT=0 # the classic builder: no buildx plugin, no frontend image to pull

say() { echo "images.sh: $*" >&2; }
die() {
	say "$*"
	exit 1
}

BASE=$PREFIX/debian:$DEBIAN_SUITE
GOLANG=$PREFIX/golang:$(go env GOVERSION | sed -E 's/^go([0-9]+\.[0-9]+).*/\1/')
KAFKA=$PREFIX/kafka:$KAFKA_VERSION
REDIS=$PREFIX/redis:7
POSTGRES=$PREFIX/postgres:15

# The reaper must carry the name testcontainers-go asks for, under the prefix.
ryuk_image() {
	local dir
	# On a new machine the module is not in the cache yet.
	go mod download github.com/testcontainers/testcontainers-go
	dir=$(go list -m -f '{{.Dir}}' github.com/testcontainers/testcontainers-go)
	grep -ho 'testcontainers/ryuk:[0-9.]*' "$dir/internal/config/config.go" | head -n 1
}
REAPER=$PREFIX/$(ryuk_image)

names() {
	cat <<EOF
POSTBOX_KAFKA_IMAGE=$KAFKA
POSTBOX_REDIS_IMAGE=$REDIS
POSTBOX_POSTGRES_IMAGE=$POSTGRES
POSTBOX_GO_IMAGE=$GOLANG
POSTBOX_RUNTIME_IMAGE=$BASE
TESTCONTAINERS_HUB_IMAGE_NAME_PREFIX=$PREFIX
EOF
}

# built_from prints the content hash an image was built from, if it exists.
built_from() { docker image inspect -f "{{index .Config.Labels \"$LABEL\"}}" "$1" 2>/dev/null || true; }

# hash_of hashes its arguments and the contents of the files under any
# argument that is a folder.
hash_of() {
	local a
	for a in "$@"; do
		if [[ -d $a ]]; then
			(cd "$a" && find . -type f -print0 | sort -z | xargs -0 sha256sum)
		else
			echo "$a"
		fi
	done | sha256sum | cut -c1-32
}

# base: a minimal Debian from debootstrap, with certificates and wget (the
# compose file's health checks use it).
base() {
	local key
	key=$(hash_of base-v1 "$DEBIAN_SUITE" ca-certificates,wget)
	[[ $(built_from "$BASE") == "$key" ]] && return 0
	command -v debootstrap >/dev/null || die "debootstrap not found: apt-get install debootstrap"
	[[ $(id -u) == 0 ]] || die "debootstrap needs root"
	local root=$IMAGES_CACHE/rootfs
	rm -rf "$root"
	mkdir -p "$IMAGES_CACHE"
	say "debootstrap $DEBIAN_SUITE from $DEBIAN_MIRROR (about a minute)"
	debootstrap --variant=minbase --include=ca-certificates,wget "$DEBIAN_SUITE" "$root" "$DEBIAN_MIRROR" \
		>"$IMAGES_CACHE/debootstrap.log" 2>&1 ||
		{
			tail -n 20 "$IMAGES_CACHE/debootstrap.log" >&2
			die "debootstrap failed (log: $IMAGES_CACHE/debootstrap.log)"
		}
	rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb
	tar -C "$root" -c . | docker import \
		--change "LABEL $LABEL=$key" \
		--change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
		--change 'CMD ["bash"]' - "$BASE" >/dev/null
	rm -rf "$root"
	say "built $BASE"
}

# build TAG FOLDER PREPARE [KEY...]: builds FOLDER's Dockerfile on the base
# unless TAG was built from the same content. PREPARE copies what the
# folder lacks into the build context given as its argument.
build() {
	local tag=$1 dir=$2 prepare=$3
	shift 3
	local key
	key=$(hash_of "$(docker image inspect -f '{{.Id}}' "$BASE")" "$dir" "$@")
	[[ $(built_from "$tag") == "$key" ]] && return 0
	local ctx=$IMAGES_CACHE/context
	rm -rf "$ctx"
	mkdir -p "$ctx"
	cp -a "$dir"/. "$ctx"/
	"$prepare" "$ctx"
	say "building $tag"
	docker build -q --build-arg BASE_IMAGE="$BASE" --label "$LABEL=$key" -t "$tag" "$ctx" >/dev/null 2>"$IMAGES_CACHE/build.log" ||
		{
			cat "$IMAGES_CACHE/build.log" >&2
			die "building $tag failed"
		}
	rm -rf "$ctx"
}

nothing() { :; }

kafka_libs() { scripts/kafka.sh fetch | sed -n 's/^KAFKA_LIBS=//p'; }
with_kafka_jars() { cp -a "$(kafka_libs)" "$1/libs"; }

with_go() {
	cp -a "$(go env GOROOT)" "$1/go"
	cp /etc/ssl/certs/ca-certificates.crt "$1/"
}

with_reaper() { CGO_ENABLED=0 go build -trimpath -o "$1/reaper" ./deploy/images/reaper; }

case ${1:-build} in
names) names ;;
build)
	command -v docker >/dev/null || die "docker not found: apt-get install docker.io, then start dockerd"
	docker info >/dev/null 2>&1 || die "the Docker engine does not answer: start dockerd"
	base
	build "$KAFKA" deploy/images/kafka with_kafka_jars "$(ls -l "$(kafka_libs)")"
	build "$REDIS" deploy/images/redis nothing
	build "$POSTGRES" deploy/images/postgres nothing
	build "$GOLANG" deploy/images/golang with_go "$(go version)" "$(sha256sum /etc/ssl/certs/ca-certificates.crt)"
	build "$REAPER" deploy/images/reaper with_reaper "$(go version)"
	names
	;;
*)
	echo "usage: $0 [build|names]" >&2
	exit 2
	;;
esac
