# syntax=docker/dockerfile:1
#
# postbox worker and producer.
#
#   docker build -t postbox .
#   docker run --rm postbox run --mailbox kafka://HOST:9092/orders --journal postgres://…
#   docker run --rm --entrypoint producer postbox load --mailbox kafka://HOST:9092/orders --actors 100 --count 10000
#
# Both binaries are static (CGO_ENABLED=0: the SQLite driver is pure Go), so
# the runtime image needs no libc. It is Alpine rather than distroless so
# that busybox wget can serve as a container healthcheck against the
# worker's --admin endpoints (/healthz, /readyz).

FROM golang:1.26 AS build
WORKDIR /src
# Modules first, so that a source change does not download them again.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod \
    go mod download
COPY . .
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/ ./cmd/worker ./cmd/producer

FROM alpine:3.22
RUN apk add --no-cache ca-certificates tzdata \
    && addgroup -S -g 10001 postbox \
    && adduser -S -D -H -u 10001 -G postbox postbox \
    && mkdir /data && chown postbox:postbox /data
COPY --from=build /out/worker /out/producer /usr/local/bin/
# The default sqlite:postbox.db mailbox and journal land here; mount a
# volume on /data to keep them.
WORKDIR /data
USER 10001:10001
# --admin listens here when given, e.g. --admin :9090.
EXPOSE 9090
ENTRYPOINT ["worker"]
CMD ["run"]
