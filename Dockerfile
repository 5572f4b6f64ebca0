# postbox worker and producer.
#
#   docker build -t postbox .
#   docker run --rm postbox run --mailbox kafka://HOST:9092/orders --journal postgres://…
#   docker run --rm --entrypoint producer postbox load --mailbox kafka://HOST:9092/orders --actors 100 --count 10000
#
# The base images are build arguments, so that the image builds where no
# registry serves them: scripts/images.sh builds local ones and names them
# in POSTBOX_GO_IMAGE and POSTBOX_RUNTIME_IMAGE, which docker-compose.yml
# passes here. The runtime image needs nothing but a wget for the compose
# health checks: the binaries are static (CGO_ENABLED=0: the SQLite driver
# is pure Go) and carry their own time zone data. It builds on the classic
# builder as on BuildKit.
ARG GO_IMAGE=golang:1.26
ARG RUNTIME_IMAGE=alpine:3.22

FROM ${GO_IMAGE} AS build
WORKDIR /src
# Modules first, so that a source change does not download them again.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -buildvcs=false -trimpath -tags timetzdata -ldflags="-s -w" -o /out/ ./cmd/worker ./cmd/producer \
    && mkdir /out/data

FROM ${RUNTIME_IMAGE}
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /out/worker /out/producer /usr/local/bin/
# The default sqlite:postbox.db mailbox and journal land here; mount a
# volume on /data to keep them.
COPY --from=build --chown=10001:10001 /out/data /data
WORKDIR /data
USER 10001:10001
# --admin listens here when given, e.g. --admin :9090.
EXPOSE 9090
ENTRYPOINT ["worker"]
CMD ["run"]
