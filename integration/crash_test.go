package integration

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/postbox-dev/postbox/actors/counter"
	"github.com/postbox-dev/postbox/actors/tally"
	"github.com/postbox-dev/postbox/backend"
	"github.com/postbox-dev/postbox/internal/testenv"
	"github.com/postbox-dev/postbox/internal/waitfor"
	"github.com/postbox-dev/postbox/internal/workload"
)

// The worker is SIGKILLed at random moments while a load is published, then
// a last worker finishes. Every counter must be exact, every valid message
// must have made its side effect, and side effects may run twice only for
// those in flight at a kill. The tally variant has no side effect to
// journal, and gets every 7th message a second time, with its ID, later in
// the run (often after a checkpoint of its actor): its values and applied
// counts alone show a message applied twice or lost.
func TestCrashRecoveryUnderLoad(t *testing.T) {
	t.Run("one-actor-at-a-time", func(t *testing.T) {
		crashUnderLoad(t, crashRun{concurrency: 1, actors: 30, count: 2500, rate: 500, kills: 10})
	})
	t.Run("concurrent", func(t *testing.T) {
		crashUnderLoad(t, crashRun{concurrency: 16, actors: 100, count: 15000, rate: 2500, kills: 12})
	})
	t.Run("tally-duplicates", func(t *testing.T) {
		crashUnderLoad(t, crashRun{typ: tally.Type, duplicateEvery: 7, concurrency: 16, actors: 100, count: 15000, rate: 2500, kills: 12})
	})
}

type crashRun struct {
	typ                                     string // actor type; "" is the counter
	duplicateEvery                          int    // producer load --duplicate-every
	concurrency, actors, count, rate, kills int
}

func crashUnderLoad(t *testing.T, c crashRun) {
	dir := t.TempDir()
	dbPath := filepath.Join(dir, "postbox.db")
	db := "sqlite:" + dbPath
	sinkPath := filepath.Join(dir, "sink.ndjson")
	expectPath := filepath.Join(dir, "expect.json")
	typ := cmp.Or(c.typ, counter.Type)
	failEvery := 0
	if typ == counter.Type {
		failEvery = 40 // only the counter fails on request
	}
	spec := workload.Spec{Type: typ, Actors: c.actors, Count: c.count, Seed: 11, PoisonEvery: 250, FailEvery: failEvery,
		DuplicateEvery: c.duplicateEvery}

	// Create the mailbox before the producer and workers race to.
	mb := openMailbox(t, db, backend.MailboxOptions{})

	load := loadRun{spec: spec, rate: c.rate}.start(t, dir, "load", db, "--expect", expectPath)

	seed := uint64(time.Now().UnixNano())
	rng := rand.New(rand.NewPCG(seed, 1))
	t.Logf("kill schedule seed %d", seed)
	args := func(admin string) workerArgs {
		return workerArgs{mailbox: db, journal: db, sink: sinkPath, concurrency: c.concurrency, admin: admin,
			extra: append(slices.Clone(serviceFlags), "--lease-ttl", "1s")}
	}
	for k := range c.kills {
		w := startWorker(t, dir, fmt.Sprint("worker-", k), args(""))
		time.Sleep(time.Duration(300+rng.IntN(900)) * time.Millisecond)
		w.kill(t)
	}
	load.exit(t, 3*time.Minute)

	want := expected(spec)
	var fromFile map[string]counter.State
	b, _ := os.ReadFile(expectPath)
	if err := json.Unmarshal(b, &fromFile); err != nil || len(fromFile) != len(want.states) {
		t.Fatalf("--expect file: %v (%d actors)", err, len(fromFile))
	}
	want.states = fromFile // the producer's own account of what it published

	finalAdmin := testenv.FreeAddr(t)
	final := startWorker(t, dir, "worker-final", args(finalAdmin))
	// Signalled before its main has run, a process dies of the signal:
	// wait until the worker serves its admin endpoint.
	waitfor.Until(t, 20*time.Second, "the final worker's /readyz", func() bool {
		code, _ := testenv.Get("http://" + finalAdmin + "/readyz")
		return code == 200
	})
	check := newChecker(t, db, mb, want)
	if err := check.waitExact(3 * time.Minute); err != nil {
		t.Fatalf("after recovery, %s actors: %v", typ, err)
	}
	final.stop(t, time.Minute)
	ctx := context.Background()
	if d := diffStates(ctx, check.reg, check.j, fromFile); d.wrong != 0 {
		t.Fatalf("after the final worker stopped, %s actors: %s\n%s", typ, d, journalTail(ctx, check.j, d.addr, 12))
	}
	checkStateCLI(t, db, fromFile, 3)

	// Dead letters: exactly the poison messages.
	envs, _ := mb.DLQ.List(ctx)
	if len(envs) != len(want.poison) {
		t.Errorf("%d dead letters, want %d", len(envs), len(want.poison))
	}
	for _, e := range envs {
		if want.poison[e.MessageID] == "" {
			t.Errorf("dead letter %s (%s, %s) is not a poison message", e.MessageID, e.Reason, e.LastError())
		}
	}

	lines, keys := sinkStats(t, sinkPath)
	extra := lines - keys
	t.Logf("%d kills, %d valid messages (%d published twice), %d sink lines, %d distinct keys, %d effects run twice",
		c.kills, len(want.valid), want.dups, lines, keys, extra)
	// One per valid counter message; the tally makes no side effect.
	if keys != len(want.effects) {
		t.Errorf("%d distinct effect keys, want one per valid counter message: %d", keys, len(want.effects))
	}
	if bound := c.kills * c.concurrency; extra > bound {
		t.Errorf("%d effects ran twice; at most %d kills x %d in flight = %d may", extra, c.kills, c.concurrency, bound)
	}
}
