package integration

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/postbox-dev/postbox/internal/waitfor"
	"github.com/postbox-dev/postbox/internal/workload"
)

// TestComposeDeploymentSurvivesAKill brings docker-compose.yml up as a user
// would: Kafka, PostgreSQL and two workers built from the repository's
// Dockerfile (on the images scripts/images.sh names, where they are set).
// The compose file's producer publishes a load with poison, failing and
// duplicate messages; worker-1 is killed hard (docker kill) under load and
// started again. Then every counter, read with `worker state` inside the
// deployment, must be exact, and every poison message dead-lettered once.
// down -v removes it all, passed or failed.
func TestComposeDeploymentSurvivesAKill(t *testing.T) {
	requireDocker(t, "docker-compose")
	begin := time.Now()
	elapsed := func() string { return time.Since(begin).Round(100 * time.Millisecond).String() }
	project := fmt.Sprintf("postboxtest%d", os.Getpid())
	files := []string{"-f", "../docker-compose.yml", "-p", project}
	compose := func(timeout time.Duration, args ...string) string {
		t.Helper()
		return docker(t, timeout, "docker-compose", append(files, args...)...)
	}
	t.Cleanup(func() {
		if t.Failed() {
			logs, _ := tryDocker(time.Minute, "docker-compose", append(files, "logs", "--no-color", "--tail", "30")...)
			t.Logf("--- the deployment's logs:\n%s", logs)
		}
		if _, err := tryDocker(3*time.Minute, "docker-compose", append(files, "down", "-v", "--remove-orphans", "--timeout", "5")...); err != nil {
			t.Error(err)
		}
	})

	compose(20*time.Minute, "up", "-d", "--build", "kafka", "postgres", "worker-1", "worker-2")
	id := func(service string) string { return strings.TrimSpace(compose(time.Minute, "ps", "-q", service)) }
	w1, w2 := id("worker-1"), id("worker-2")
	waitfor.Every(t, 3*time.Minute, time.Second, "both workers healthy", func() bool {
		return containerHealthy(w1) && containerHealthy(w2)
	})
	t.Logf("%s: Kafka, PostgreSQL and two workers up and healthy", elapsed())

	spec := workload.Spec{Actors: 50, Count: 6000, Seed: 41, PoisonEvery: 300, FailEvery: 60, DuplicateEvery: 11}
	l := newCheckedLoad(spec, 500)
	published := make(chan error, 1)
	go func() {
		args := append(files, "run", "--rm", "--no-deps", "-T", "producer", "load", "--mailbox", "kafka://kafka:9092/orders")
		_, err := tryDocker(5*time.Minute, "docker-compose", append(args, loadArgs(spec, 500)...)...)
		published <- err
	}()

	// worker-1's admin port is published on 127.0.0.1:8081.
	waitfor.Every(t, 2*time.Minute, 200*time.Millisecond, "worker-1 to process 300 messages", func() bool {
		v, _ := metric("127.0.0.1:8081", "postbox_messages_processed_total")
		return v >= 300
	})
	docker(t, time.Minute, "docker", "kill", w1)
	t.Logf("%s: docker kill worker-1", elapsed())
	waitfor.Every(t, time.Minute, 200*time.Millisecond, "worker-1 to be gone", func() bool { return !containerRunning(w1) })
	docker(t, time.Minute, "docker", "start", w1)
	waitfor.Every(t, 3*time.Minute, time.Second, "worker-1 healthy again", func() bool { return containerHealthy(w1) })
	t.Logf("%s: worker-1 started again and healthy", elapsed())

	if err := waitfor.Receive(t, 5*time.Minute, "producer load to finish", published); err != nil {
		t.Fatalf("producer load: %v", err)
	}
	t.Logf("%s: %d messages published (%d poison, %d duplicates)", elapsed(), spec.Total(), len(l.want.poison), l.want.dups)

	// Inside the deployment, as an operator would look.
	state := func(addr string) (string, error) {
		return tryDocker(time.Minute, "docker", "exec", w2, "worker", "state", addr)
	}
	wrong := func() (n int, example string) {
		for _, addr := range sortedKeys(l.want.states) {
			out, err := state(addr)
			got, perr := parseState(out)
			if err != nil || perr != nil || got != l.want.states[addr] {
				if n == 0 {
					example = fmt.Sprintf("%s = %q (%v %v), want %+v", addr, out, err, perr, l.want.states[addr])
				}
				n++
			}
		}
		return n, example
	}
	waitfor.Succeeds(t, 3*time.Minute, 2*time.Second, func() error {
		if n, example := wrong(); n != 0 {
			return fmt.Errorf("%d counters are wrong through worker state, e.g. %s", n, example)
		}
		return nil
	})
	rows := parseDLQList(t, docker(t, time.Minute, "docker", "exec", w2, "worker", "dlq", "list"))
	l.want.checkDeadLetterRows(t, rows)
	t.Logf("%s: all %d counters exact through worker state (%d applied), %d poison messages dead-lettered once",
		elapsed(), len(l.want.states), len(l.want.valid), len(rows))
}
