package testenv

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
)

func TestEnvironmentWins(t *testing.T) {
	t.Setenv("REDIS_ADDR", "127.0.0.1:1")
	t.Setenv("KAFKA_BROKERS", "127.0.0.1:1,127.0.0.1:2")
	if got := Redis(t); got != "127.0.0.1:1" {
		t.Errorf("Redis = %q", got)
	}
	if got := Kafka(t); len(got) != 2 || got[1] != "127.0.0.1:2" {
		t.Errorf("Kafka = %q", got)
	}
}

// helperEnv makes TestNoServiceHelper ask for Redis; only the test below
// runs it, in a child process. Otherwise it does nothing.
const helperEnv = "POSTBOX_TESTENV_HELPER"

func TestNoServiceHelper(t *testing.T) {
	if os.Getenv(helperEnv) != "" {
		Redis(t)
	}
}

// The child finds neither REDIS_ADDR nor a Docker engine it may use
// (POSTBOX_NO_DOCKER), whatever this machine has.
func TestWithoutServiceOrDockerSkipsButFailsUnderCI(t *testing.T) {
	for _, ci := range []string{"", "true"} {
		cmd := exec.Command(os.Args[0], "-test.run=^TestNoServiceHelper$", "-test.v")
		cmd.Env = append(os.Environ(), helperEnv+"=1", "REDIS_ADDR=", "CI="+ci, "POSTBOX_NO_DOCKER=1")
		out, err := cmd.CombinedOutput()
		want, failed := "--- SKIP", false
		if ci == "true" {
			want, failed = "--- FAIL", true
		}
		if !strings.Contains(string(out), want) || (err != nil) != failed ||
			!strings.Contains(string(out), "REDIS_ADDR is not set") || !strings.Contains(string(out), "scripts/services.sh") {
			t.Errorf("CI=%q: %v\n%s", ci, err, out)
		}
	}
}

// FreeAddr's ports sit below the ephemeral range, where no ":0" bind (a
// client socket, docker-proxy) can take them before the test's server binds.
func TestFreeAddrIsBelowTheEphemeralRange(t *testing.T) {
	low := ephemeralLow()
	for range 50 {
		addr := FreeAddr(t)
		_, port, _ := strings.Cut(addr, ":")
		var p int
		if _, err := fmt.Sscan(port, &p); err != nil || p < freeRangeStart || p >= low {
			t.Fatalf("FreeAddr = %s, want a port in %d-%d", addr, freeRangeStart, low-1)
		}
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			t.Fatalf("FreeAddr = %s, not free: %v", addr, err)
		}
		ln.Close()
	}
}
