// Package testenv hands tests the address of a real Kafka broker, Redis or
// PostgreSQL server. The environment names it (KAFKA_BROKERS, REDIS_ADDR,
// POSTGRES_DSN; scripts/services.sh and scripts/kafka.sh print them).
// Without it, where Docker runs, testcontainers-go starts the service once
// per test binary (Ryuk removes the container when the binary exits), on
// the images POSTBOX_KAFKA_IMAGE, POSTBOX_REDIS_IMAGE and
// POSTBOX_POSTGRES_IMAGE name (scripts/images.sh builds local ones), else
// on the official images.
// With neither (or with POSTBOX_NO_DOCKER set), the test is skipped, or
// fails under CI=true, where every service test must run.
package testenv

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

// Kafka returns KAFKA_BROKERS, split at commas.
func Kafka(t testing.TB) []string {
	t.Helper()
	return strings.Split(kafka.address(t), ",")
}

// Redis returns REDIS_ADDR, host:port.
func Redis(t testing.TB) string {
	t.Helper()
	return redis.address(t)
}

// Postgres returns POSTGRES_DSN, a postgres:// URL.
func Postgres(t testing.TB) string {
	t.Helper()
	return postgres.address(t)
}

// FromEnvironment reports whether the service behind name (KAFKA_BROKERS,
// REDIS_ADDR or POSTGRES_DSN) comes from the environment, as it must for
// tests that restart it with the repository's scripts.
func FromEnvironment(name string) bool { return os.Getenv(name) != "" }

// service is one kind of server and how to get one.
type service struct {
	env   string // the variable naming it
	how   string // how to start one without Docker
	start func(ctx context.Context) (string, error)

	once sync.Once
	addr string
	err  error
}

var (
	kafka = &service{env: "KAFKA_BROKERS", start: startKafka,
		how: "start a broker with scripts/kafka.sh start and export the KAFKA_BROKERS it prints"}
	redis = &service{env: "REDIS_ADDR", start: startRedis,
		how: "start one with scripts/services.sh start redis and export the REDIS_ADDR it prints"}
	postgres = &service{env: "POSTGRES_DSN", start: startPostgres,
		how: "start one with scripts/services.sh start postgres and export the POSTGRES_DSN it prints"}
)

func (s *service) address(t testing.TB) string {
	t.Helper()
	if v := os.Getenv(s.env); v != "" {
		return v
	}
	s.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		if s.err = dockerRuns(ctx); s.err == nil {
			s.addr, s.err = s.start(ctx)
		}
	})
	if s.err == nil {
		return s.addr
	}
	msg := fmt.Sprintf("%s is not set and no container could be started (%v): %s", s.env, s.err, s.how)
	if os.Getenv("CI") == "true" {
		t.Fatal("under CI=true the service tests must run: " + msg)
	}
	t.Skip(msg)
	return ""
}
