package testenv

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/network"
	"github.com/testcontainers/testcontainers-go"
	tcpostgres "github.com/testcontainers/testcontainers-go/modules/postgres"
	tcredis "github.com/testcontainers/testcontainers-go/modules/redis"
	"github.com/testcontainers/testcontainers-go/wait"
)

// The images, as docker-compose.yml names them: the same variables name
// others (scripts/images.sh builds local equivalents and prints the names),
// else the official ones. The container tests start these too.
var (
	KafkaImage    = image("POSTBOX_KAFKA_IMAGE", "apache/kafka:4.1.1")
	RedisImage    = image("POSTBOX_REDIS_IMAGE", "redis:7-alpine")
	PostgresImage = image("POSTBOX_POSTGRES_IMAGE", "postgres:17-alpine")
	// RuntimeImage is the Dockerfile's runtime stage: any Linux with wget.
	RuntimeImage = image("POSTBOX_RUNTIME_IMAGE", "alpine:3.22")
)

func image(env, official string) string {
	if v := os.Getenv(env); v != "" {
		return v
	}
	return official
}

// dockerRuns says why containers cannot be started, if they cannot.
// POSTBOX_NO_DOCKER set says they must not be, whatever runs.
func dockerRuns(ctx context.Context) (err error) {
	if os.Getenv("POSTBOX_NO_DOCKER") != "" {
		return errors.New("POSTBOX_NO_DOCKER is set")
	}
	defer func() {
		// testcontainers panics when it finds no Docker at all.
		if r := recover(); r != nil {
			err = fmt.Errorf("no Docker: %v", r)
		}
	}()
	p, err := testcontainers.ProviderDefault.GetProvider()
	if err != nil {
		return fmt.Errorf("no Docker: %w", err)
	}
	defer p.Close()
	if err := p.Health(ctx); err != nil {
		return fmt.Errorf("Docker is not healthy: %w", err)
	}
	return nil
}

// startKafka runs one combined KRaft broker and controller. Clients must
// reach the broker at the address it advertises, so the host port is picked
// first and both sides of the mapping use it.
func startKafka(ctx context.Context) (string, error) {
	port, err := freePort()
	if err != nil {
		return "", err
	}
	p := strconv.Itoa(port)
	c, err := testcontainers.Run(ctx, KafkaImage,
		testcontainers.WithEnv(map[string]string{
			"KAFKA_NODE_ID":                                          "1",
			"KAFKA_PROCESS_ROLES":                                    "broker,controller",
			"KAFKA_CONTROLLER_QUORUM_VOTERS":                         "1@localhost:9093",
			"KAFKA_LISTENERS":                                        "PLAINTEXT://:" + p + ",CONTROLLER://:9093",
			"KAFKA_ADVERTISED_LISTENERS":                             "PLAINTEXT://127.0.0.1:" + p,
			"KAFKA_LISTENER_SECURITY_PROTOCOL_MAP":                   "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
			"KAFKA_CONTROLLER_LISTENER_NAMES":                        "CONTROLLER",
			"KAFKA_INTER_BROKER_LISTENER_NAME":                       "PLAINTEXT",
			"CLUSTER_ID":                                             "jOUyf0JEQVelRhA2Lw5iFw",
			"KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR":                 "1",
			"KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR":         "1",
			"KAFKA_TRANSACTION_STATE_LOG_MIN_ISR":                    "1",
			"KAFKA_SHARE_COORDINATOR_STATE_TOPIC_REPLICATION_FACTOR": "1",
			"KAFKA_SHARE_COORDINATOR_STATE_TOPIC_MIN_ISR":            "1",
			"KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS":                 "0",
			"KAFKA_GROUP_MIN_SESSION_TIMEOUT_MS":                     "1000",
		}),
		testcontainers.WithExposedPorts(p+"/tcp"),
		testcontainers.WithHostConfigModifier(func(hc *container.HostConfig) {
			hc.PortBindings = network.PortMap{network.MustParsePort(p + "/tcp"): {
				{HostIP: netip.MustParseAddr("127.0.0.1"), HostPort: p},
			}}
		}),
		testcontainers.WithWaitStrategy(wait.ForListeningPort(p+"/tcp")),
	)
	return started(KafkaImage, c, err, func() (string, error) { return "127.0.0.1:" + p, nil })
}

// startRedis runs Redis with every write fsynced to its append-only file,
// as scripts/services.sh does.
func startRedis(ctx context.Context) (string, error) {
	c, err := tcredis.Run(ctx, RedisImage,
		testcontainers.WithCmd("redis-server", "--appendonly", "yes", "--appendfsync", "always"))
	return started(RedisImage, c, err, func() (string, error) { return c.Endpoint(ctx, "") })
}

func startPostgres(ctx context.Context) (string, error) {
	c, err := tcpostgres.Run(ctx, PostgresImage,
		tcpostgres.WithDatabase("postbox"), tcpostgres.WithUsername("postbox"), tcpostgres.WithPassword("postbox"),
		tcpostgres.BasicWaitStrategies())
	return started(PostgresImage, c, err, func() (string, error) { return c.ConnectionString(ctx, "sslmode=disable") })
}

// started returns the address addr gives of a container that a Run call
// started (err is Run's), and terminates the container when either fails.
func started(image string, c testcontainers.Container, err error, addr func() (string, error)) (string, error) {
	if err != nil {
		return "", errors.Join(fmt.Errorf("start %s: %w", image, err), testcontainers.TerminateContainer(c))
	}
	a, err := addr()
	if err != nil {
		return "", errors.Join(fmt.Errorf("address of %s: %w", image, err), testcontainers.TerminateContainer(c))
	}
	return a, nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("pick a port for Kafka: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
