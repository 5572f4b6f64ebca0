package integration

import (
	"strings"
	"testing"

	"github.com/postbox-dev/postbox/internal/testenv"
)

// `worker demo` passes its checks on the embedded default and on the
// pairings the README recommends, given by URL.
func TestDemoOnEveryPairing(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		args func(t *testing.T) []string
	}{
		{"sqlite", func(*testing.T) []string { return nil }},
		{"redis-redis", func(t *testing.T) []string {
			addr := testenv.Redis(t)
			name := uniqueName(t)
			return []string{"--mailbox", "redis://" + addr + "/" + name, "--journal", "redis://" + addr + "/" + name + "-j"}
		}},
		{"kafka-postgres", func(t *testing.T) []string {
			brokers := kafkaBrokers(t)
			return []string{"--mailbox", "kafka://" + brokers + "/" + kafkaTopic(t, brokers), "--journal", postgresJournal(t)}
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			args := append([]string{"demo", "--count", "1000", "--actors", "20"}, c.args(t)...)
			r := run(t, "", workerBin, args...)
			if r.code != 0 || !strings.Contains(r.stdout, "all checks passed") || strings.Contains(r.stdout, "[FAIL") {
				t.Errorf("worker %s: status %d\n%s\n%s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
			}
		})
	}
}
