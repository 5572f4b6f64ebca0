package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/postbox-dev/postbox/actorhost"
	"github.com/postbox-dev/postbox/actors/counter"
	"github.com/postbox-dev/postbox/channel"
	"github.com/postbox-dev/postbox/internal/backends"
	"github.com/postbox-dev/postbox/internal/workload"
)

// The worker is SIGKILLed at random moments while a load is published, then
// a last worker finishes. Every counter must be exact, every valid message
// must have made its side effect, and side effects may run twice only for
// those in flight at a kill.
func TestCrashRecoveryUnderLoad(t *testing.T) {
	t.Run("one-actor-at-a-time", func(t *testing.T) {
		crashUnderLoad(t, crashRun{concurrency: 1, actors: 30, count: 2500, rate: 500, kills: 10})
	})
	t.Run("concurrent", func(t *testing.T) {
		crashUnderLoad(t, crashRun{concurrency: 16, actors: 100, count: 15000, rate: 2500, kills: 12})
	})
}

type crashRun struct {
	concurrency, actors, count, rate, kills int
}

func crashUnderLoad(t *testing.T, c crashRun) {
	dir := t.TempDir()
	dbPath := filepath.Join(dir, "postbox.db")
	db := "sqlite:" + dbPath
	sinkPath := filepath.Join(dir, "sink.ndjson")
	expectPath := filepath.Join(dir, "expect.json")
	spec := workload.Spec{Actors: c.actors, Count: c.count, Seed: 11, PoisonEvery: 250, FailEvery: 40}

	// Create the mailbox before the producer and workers race to.
	mb, err := backends.OpenMailbox(db, backends.MailboxOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer mb.Close()

	load := exec.Command(producerBin, "load", "--mailbox", db, "--actors", fmt.Sprint(c.actors), "--count", fmt.Sprint(c.count),
		"--rate", fmt.Sprint(c.rate), "--seed", "11", "--poison-every", "250", "--fail-every", "40", "--expect", expectPath, "--quiet")
	load.Env = cleanEnv()
	loadOut, _ := os.Create(filepath.Join(dir, "load.log"))
	load.Stdout, load.Stderr = loadOut, loadOut
	if err := load.Start(); err != nil {
		t.Fatal(err)
	}
	defer load.Process.Kill()

	seed := uint64(time.Now().UnixNano())
	rng := rand.New(rand.NewPCG(seed, 1))
	t.Logf("kill schedule seed %d", seed)
	startWorker := func(name string) *exec.Cmd {
		w := exec.Command(workerBin, "run", "--mailbox", db, "--journal", db, "--counter-sink", sinkPath,
			"--concurrency", fmt.Sprint(c.concurrency), "--checkpoint-every", "10", "--lease-ttl", "1s",
			"--backoff-initial", "5ms", "--backoff-max", "50ms", "--log-level", "warn")
		w.Env = cleanEnv()
		logf, _ := os.Create(filepath.Join(dir, name+".log"))
		w.Stdout, w.Stderr = logf, logf
		if err := w.Start(); err != nil {
			t.Fatal(err)
		}
		return w
	}
	for k := range c.kills {
		w := startWorker(fmt.Sprint("worker-", k))
		time.Sleep(time.Duration(300+rng.IntN(900)) * time.Millisecond)
		w.Process.Signal(syscall.SIGKILL)
		w.Wait()
	}
	if err := load.Wait(); err != nil {
		out, _ := os.ReadFile(filepath.Join(dir, "load.log"))
		t.Fatalf("producer load failed: %v\n%s", err, out)
	}

	exp, _ := spec.Generate(nil)
	var fromFile map[string]counter.State
	b, _ := os.ReadFile(expectPath)
	if err := json.Unmarshal(b, &fromFile); err != nil || len(fromFile) != len(exp.States) {
		t.Fatalf("--expect file: %v (%d actors)", err, len(fromFile))
	}

	final := startWorker("worker-final")
	defer final.Process.Kill()
	j, err := backends.OpenJournal(db, backends.JournalOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	reg := actorhost.NewRegistry()
	counter.Register(reg, nil)
	ctx := context.Background()
	wrong := func() (n int, example string) {
		for addr, want := range fromFile {
			a, _ := channel.ParseAddress(addr)
			r, err := reg.Replay(ctx, j, a, actorhost.ReplayOptions{})
			var got counter.State
			if err == nil {
				err = json.Unmarshal(r.State, &got)
			}
			if err != nil || got != want {
				n++
				example = fmt.Sprintf("%s = %+v (%v), want %+v", addr, got, err, want)
			}
		}
		return n, example
	}
	deadline := time.Now().Add(3 * time.Minute)
	for {
		n, ex := wrong()
		envs, _ := mb.DLQ.List(ctx)
		if n == 0 && len(envs) >= exp.Poison {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after recovery %d counters wrong (e.g. %s), %d dead letters of %d", n, ex, len(envs), exp.Poison)
		}
		time.Sleep(200 * time.Millisecond)
	}
	final.Process.Signal(syscall.SIGTERM)
	if err := final.Wait(); err != nil {
		t.Errorf("final worker did not stop cleanly: %v", err)
	}
	if n, ex := wrong(); n != 0 {
		t.Fatalf("after the final worker stopped, %d counters wrong: %s", n, ex)
	}

	// Dead letters: exactly the poison messages.
	envs, _ := mb.DLQ.List(ctx)
	poison := map[string]bool{}
	spec.Generate(func(m channel.Message) error {
		if string(m.Payload) == `{"add":"not a number"}` {
			poison[m.ID] = true
		}
		return nil
	})
	if len(envs) != len(poison) {
		t.Errorf("%d dead letters, want %d", len(envs), len(poison))
	}
	for _, e := range envs {
		if !poison[e.MessageID] {
			t.Errorf("dead letter %s (%s, %s) is not a poison message", e.MessageID, e.Reason, e.LastError())
		}
	}

	lines, err := counter.ReadSink(sinkPath)
	if err != nil {
		t.Fatal(err)
	}
	keys := map[string]bool{}
	for _, l := range lines {
		keys[l.Key] = true
	}
	extra := len(lines) - len(keys)
	t.Logf("%d kills, %d valid messages, %d sink lines, %d distinct keys, %d effects run twice",
		c.kills, exp.Valid, len(lines), len(keys), extra)
	if len(keys) != exp.Valid {
		t.Errorf("%d distinct effect keys, want one per valid message: %d", len(keys), exp.Valid)
	}
	if bound := c.kills * c.concurrency; extra > bound {
		t.Errorf("%d effects ran twice; at most %d kills x %d in flight = %d may", extra, c.kills, c.concurrency, bound)
	}
}
