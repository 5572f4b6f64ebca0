package actorhost_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/postbox-dev/postbox/actorhost"
	"github.com/postbox-dev/postbox/channel"
	chsqlite "github.com/postbox-dev/postbox/channel/sqlite"
	jsqlite "github.com/postbox-dev/postbox/journal/sqlite"
)

// crasherEnv makes the test binary act as a worker whose handler kills the
// process on a "die" message.
const crasherEnv = "POSTBOX_TEST_CRASHER_DIR"

func TestMain(m *testing.M) {
	if dir := os.Getenv(crasherEnv); dir != "" {
		os.Exit(runCrasher(dir))
	}
	os.Exit(m.Run())
}

// runCrasher runs a host until the other messages are done and "die" is
// dead-lettered (exit 0), unless "die" kills it first (exit 3).
func runCrasher(dir string) int {
	ctx := context.Background()
	mb, err := chsqlite.Open(filepath.Join(dir, "postbox.db"), chsqlite.Options{Partitions: 1})
	if err != nil {
		return 1
	}
	j, err := jsqlite.Open(filepath.Join(dir, "postbox.db"), jsqlite.Options{})
	if err != nil {
		return 1
	}
	reg := actorhost.NewRegistry()
	actorhost.Register(reg, "victim", func(ctx *actorhost.Context, s *struct{ N int }, m actorhost.Message) error {
		if string(m.Payload) == "die" {
			os.Exit(3) // as a segfault or an OOM kill would
		}
		s.N++
		return nil
	})
	h, err := actorhost.New(actorhost.Config{
		Registry: reg, Journal: j, DeadLetters: mb.DLQ(), MaxAttempts: 3,
		Consumer: mb.Consumer(chsqlite.ConsumerOptions{LeaseTTL: 300 * time.Millisecond, PollInterval: time.Millisecond}),
	})
	if err != nil {
		return 1
	}
	h.Start(ctx)
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		envs, _ := mb.DLQ().List(ctx)
		if len(envs) == 1 && h.Stats().Processed+h.Stats().Deduplicated >= 1 {
			h.Stop(ctx)
			return 0
		}
		time.Sleep(5 * time.Millisecond)
	}
	return 1
}

func TestMessageThatKillsTheProcessReachesTheDLQ(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	mb, err := chsqlite.Open(filepath.Join(dir, "postbox.db"), chsqlite.Options{Partitions: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer mb.Close()
	victim := channel.Address{Type: "victim", ID: "1"}
	err = mb.Publisher().Publish(context.Background(),
		channel.Message{ID: "die", Address: victim, Payload: []byte("die")},
		channel.Message{ID: "live", Address: victim, Payload: []byte("live")})
	if err != nil {
		t.Fatal(err)
	}
	deaths := 0
	for run := 0; ; run++ {
		if run == 10 {
			t.Fatalf("still crash-looping after %d runs", run)
		}
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), crasherEnv+"="+dir)
		began := time.Now()
		out, err := cmd.CombinedOutput()
		t.Logf("run %d: %v after %s", run, cmd.ProcessState, time.Since(began))
		if cmd.ProcessState != nil && cmd.ProcessState.ExitCode() == 3 {
			deaths++
			continue
		}
		if err != nil {
			t.Fatalf("crasher run %d: %v\n%s", run, err, out)
		}
		break
	}
	envs, err := mb.DLQ().List(context.Background())
	if err != nil || len(envs) != 1 {
		t.Fatalf("dlq = %+v, %v", envs, err)
	}
	e := envs[0]
	if e.MessageID != "die" || e.Attempts != 3 || e.Reason != "attempts exhausted" {
		t.Errorf("envelope: id %s attempts %d reason %q", e.MessageID, e.Attempts, e.Reason)
	}
	// The first crash cannot be counted (a first delivery is not pre-marked);
	// every later one is.
	if deaths != 4 {
		t.Errorf("the process died %d times, want max attempts + 1 = 4", deaths)
	}
	_ = fmt.Sprint
}
