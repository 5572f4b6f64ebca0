package integration

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/postbox-dev/postbox/internal/testenv"
)

// privateKafka is a broker of one test's own, run by scripts/kafka.sh on
// free loopback ports with its data in the test's directory, so that the
// test can stop and restart it without disturbing the tests that share the
// broker of KAFKA_BROKERS.
type privateKafka struct {
	brokers string
	env     []string
}

// startPrivateKafka starts a broker and stops it when the test ends. It
// needs what scripts/kafka.sh needs (a JDK, and Maven or the jars fetched
// by an earlier start); it runs where KAFKA_BROKERS is set, as that says
// the Kafka tests are wanted there.
func startPrivateKafka(t *testing.T, dir string) *privateKafka {
	t.Helper()
	kafkaBrokers(t)
	if _, err := exec.LookPath("java"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("java is not installed: scripts/kafka.sh needs a JDK 17+ to run a broker of this test's own")
		}
		t.Skip("java is not installed: scripts/kafka.sh needs a JDK 17+ to run a broker of this test's own")
	}
	port := func() string {
		_, p, _ := net.SplitHostPort(testenv.FreeAddr(t))
		return p
	}
	client := port()
	k := &privateKafka{
		brokers: "127.0.0.1:" + client,
		env: append(os.Environ(), "KAFKA_PORT="+client, "KAFKA_CONTROLLER_PORT="+port(),
			"KAFKA_DATA_DIR="+filepath.Join(dir, "kafka")),
	}
	t.Cleanup(func() { k.script(t, "stop") })
	k.start(t)
	return k
}

func (k *privateKafka) start(t *testing.T) time.Duration {
	t.Helper()
	start := time.Now()
	if out := k.script(t, "start"); !strings.Contains(out, "KAFKA_BROKERS="+k.brokers) {
		t.Fatalf("scripts/kafka.sh start printed no KAFKA_BROKERS=%s:\n%s", k.brokers, out)
	}
	return time.Since(start)
}

func (k *privateKafka) stop(t *testing.T) time.Duration {
	t.Helper()
	start := time.Now()
	k.script(t, "stop")
	return time.Since(start)
}

// script runs scripts/kafka.sh with the broker's environment.
func (k *privateKafka) script(t *testing.T, verb string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "../scripts/kafka.sh", verb)
	cmd.Env = k.env
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Errorf("scripts/kafka.sh %s: %v\n%s", verb, err, out)
	}
	return string(out)
}
