package journaltest

import (
	"errors"
	"fmt"
	"testing"

	"github.com/postbox-dev/postbox/journal"
)

// Tests of two journals on one store, standing for two worker processes.

// share opens a second journal on j's store, closed when t ends, or skips
// t when the store cannot be shared.
func (s *suite) share(t *testing.T, j journal.Journal) journal.Journal {
	t.Helper()
	if s.f.Share == nil {
		t.Skip("store is not shared between processes (Features.Share is nil)")
	}
	other := s.f.Share(t, j)
	if other == nil {
		t.Fatal("Features.Share returned a nil journal")
	}
	t.Cleanup(func() { _ = other.Close() })
	return other
}

// A zombie keeps appending under its old epoch while a new owner takes
// the partition. Once the new owner's epoch is set, no append of the
// zombie may land: the history the new owner reads then is final.
func (s *suite) testZombieFencedAcrossProcesses(t *testing.T) {
	zombie, ctx := s.setup(t)
	owner := s.share(t, zombie)
	for round := range 5 {
		actor := fmt.Sprintf("counter/%d", round)
		old := acquire(t, ctx, zombie, "p0")
		zombieDone := make(chan error, 1)
		started := make(chan struct{})
		go func() {
			for seq := int64(1); ; seq++ {
				if seq == 3 {
					close(started)
				}
				err := zombie.Append(ctx, batch("p0", old, run(actor, seq, seq)))
				if err != nil {
					zombieDone <- err
					return
				}
			}
		}()
		<-started
		acquire(t, ctx, owner, "p0")
		seen, err := owner.LastSeq(ctx, actor)
		if err != nil {
			t.Fatal(err)
		}
		if err := <-zombieDone; !journal.Fenced(err, "p0") {
			t.Fatalf("round %d: zombie stopped with %v, want it fenced", round, err)
		}
		if last, err := owner.LastSeq(ctx, actor); err != nil || last != seen {
			t.Fatalf("round %d: the owner saw seq %d after taking the partition, but the zombie got to %d (%v)", round, seen, last, err)
		}
	}
}

// A journal that remembers the last sequences it saw must not be fooled
// into a fork or a gap, nor locked out, by another process writing behind
// its back.
func (s *suite) testStaleHeadsAcrossProcesses(t *testing.T) {
	j1, ctx := s.setup(t)
	j2 := s.share(t, j1)
	const a = "counter/1"
	app := func(j journal.Journal, from, to int64) error {
		return j.Append(ctx, batch("p0", 0, run(a, from, to)))
	}
	if err := app(j1, 1, 2); err != nil {
		t.Fatal(err)
	}
	if err := app(j2, 3, 4); err != nil {
		t.Fatal(err)
	}
	if err := app(j1, 3, 3); !errors.Is(err, journal.ErrSequence) {
		t.Fatalf("j1 rewriting seq 3 written by j2: err = %v, want ErrSequence", err)
	}
	if err := app(j1, 6, 6); !errors.Is(err, journal.ErrSequence) {
		t.Fatalf("j1 leaving a gap at 5: err = %v, want ErrSequence", err)
	}
	if err := app(j2, 5, 5); err != nil {
		t.Fatal(err)
	}
	// The true next seq goes through, though j1 did not know it.
	if err := app(j1, 6, 7); err != nil {
		t.Fatalf("j1 continuing the history j2 extended: %v", err)
	}
	if err := app(j2, 8, 8); err != nil {
		t.Fatalf("j2 continuing after j1: %v", err)
	}
	checkEntries(t, readAll(t, ctx, j1, a, 1), run(a, 1, 8))
}

// Several checkpoints of one actor at one seq in one call: the last one
// wins, as if they had been written one by one.
func (s *suite) testCheckpointSameSeqTwiceInOneCall(t *testing.T) {
	j, ctx := s.setup(t)
	const a = "counter/1"
	first := journal.Checkpoint{Actor: a, Seq: 2, State: []byte("first")}
	second := journal.Checkpoint{Actor: a, Seq: 2, State: []byte("second")}
	mustAppend(t, ctx, j, batch("p0", 0, run(a, 1, 2), first), batch("p0", 0, nil, second))
	cp, ok, err := j.LoadCheckpoint(ctx, a, journal.MaxSeq)
	if err != nil || !ok || cp.Seq != 2 || string(cp.State) != "second" {
		t.Fatalf("LoadCheckpoint = %+v, %v, %v; want seq 2 with state %q", cp, ok, err, "second")
	}
}
