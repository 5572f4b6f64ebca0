// Package journaltest is the conformance suite every journal backend runs
// from its own tests, so that all backends keep one contract:
//
//	func TestConformance(t *testing.T) {
//		journaltest.Run(t, journaltest.Features{KeepCheckpoints: 3}, func(t *testing.T) journal.Journal {
//			return memory.New(memory.Options{})
//		})
//	}
//
// Optional behaviour is declared in Features; a test that needs a feature
// the backend lacks is skipped with the reason, never passed silently.
package journaltest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/postbox-dev/postbox/journal"
)

// Features declares what a backend does beyond the core contract.
type Features struct {
	// KeepCheckpoints is how many of an actor's newest checkpoints the store
	// keeps; older ones are dropped when a newer one is written. 0 means the
	// store keeps every checkpoint.
	KeepCheckpoints int

	// Compacts says the store may remove attempt and effect entries at or
	// below an actor's oldest kept checkpoint and clear the Data of outcome
	// entries there. Outcomes themselves must survive, so dedup still works.
	Compacts bool

	// Reopen opens again the store that j was opened on. The suite closes j
	// first. Nil means the store does not outlive Close, and the persistence
	// test is skipped.
	Reopen func(t *testing.T, j journal.Journal) journal.Journal

	// Share opens a second journal on the store j uses, while j stays open,
	// as another worker process would. Nil means the store serves one
	// process, and the tests of two sharing it are skipped.
	Share func(t *testing.T, j journal.Journal) journal.Journal
}

// testTimeout bounds every subtest, so that a deadlocked backend fails
// instead of hanging the run.
const testTimeout = 60 * time.Second

// Run runs the conformance suite. open must return a fresh, empty store
// for each call; the suite closes it when the subtest ends.
func Run(t *testing.T, f Features, open func(t *testing.T) journal.Journal) {
	s := &suite{f: f, open: open}
	tests := []struct {
		name string
		fn   func(t *testing.T)
	}{
		{"AppendRead", s.testAppendRead},
		{"ReadFrom", s.testReadFrom},
		{"ReadCallbackMayUseJournal", s.testReadCallbackMayUseJournal},
		{"AppendCopiesData", s.testAppendCopiesData},
		{"EmptyAppend", s.testEmptyAppend},
		{"InvalidInput", s.testInvalidInput},
		{"InvalidIdentifiers", s.testInvalidIdentifiers},
		{"IdentifiersAtTheLimit", s.testIdentifiersAtTheLimit},
		{"DuplicateOutcome", s.testDuplicateOutcome},
		{"DuplicateOutcomeInOneAppend", s.testDuplicateOutcomeInOneAppend},
		{"SequenceGap", s.testSequenceGap},
		{"SequenceDuplicate", s.testSequenceDuplicate},
		{"SequenceWithinBatch", s.testSequenceWithinBatch},
		{"SequenceAcrossBatches", s.testSequenceAcrossBatches},
		{"SequenceErrorWritesNothing", s.testSequenceErrorWritesNothing},
		{"EpochCompareAndSet", s.testEpochCompareAndSet},
		{"AcquireEpoch", s.testAcquireEpoch},
		{"AcquireEpochConcurrent", s.testAcquireEpochConcurrent},
		{"FencedBatchSkippedOthersWritten", s.testFencedBatchSkipped},
		{"FencedEpochZero", s.testFencedEpochZero},
		{"FencedAllBatches", s.testFencedAll},
		{"FencedBatchNotSequenceChecked", s.testFencedNotSequenceChecked},
		{"Horizon", s.testHorizon},
		{"Checkpoints", s.testCheckpoints},
		{"CheckpointAtomicWithEntries", s.testCheckpointAtomic},
		{"CheckpointBeyondLastSeq", s.testCheckpointBeyondLastSeq},
		{"KeepCheckpoints", s.testKeepCheckpoints},
		{"CompactionKeepsOutcomes", s.testCompactionKeepsOutcomes},
		{"Outcome", s.testOutcome},
		{"ConcurrentActors", s.testConcurrentActors},
		{"RacingWriters", s.testRacingWriters},
		{"Persistence", s.testPersistence},
		{"Close", s.testClose},
		{"CanceledContext", s.testCanceledContext},
		{"CheckpointSameSeqTwiceInOneCall", s.testCheckpointSameSeqTwiceInOneCall},
		{"ZombieFencedAcrossProcesses", s.testZombieFencedAcrossProcesses},
		{"StaleHeadsAcrossProcesses", s.testStaleHeadsAcrossProcesses},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.fn(t)
		})
	}
}

type suite struct {
	f    Features
	open func(t *testing.T) journal.Journal
}

// setup opens a fresh store, closed when t ends, and a context bounded by
// testTimeout.
func (s *suite) setup(t *testing.T) (journal.Journal, context.Context) {
	t.Helper()
	j := s.open(t)
	if j == nil {
		t.Fatal("journaltest: open returned a nil journal")
	}
	t.Cleanup(func() { _ = j.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	return j, ctx
}

// waitDone waits for done, failing t if it takes longer than d: a backend
// that deadlocks fails the test rather than hanging it.
func waitDone(t *testing.T, d time.Duration, done <-chan struct{}, what string) {
	t.Helper()
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-done:
	case <-timer.C:
		t.Fatalf("%s did not finish within %v (deadlock?)", what, d)
	}
}

// goAll runs fn(0..n-1) on n goroutines started together and waits,
// bounded, for all of them.
func goAll(t *testing.T, n int, fn func(i int)) {
	t.Helper()
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			fn(i)
		}()
	}
	close(start)
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	waitDone(t, testTimeout, done, fmt.Sprintf("%d goroutines", n))
}

// run returns entries seq from..to of actor, kinds cycling attempt,
// effect, complete, each with its own message ID and data.
func run(actor string, from, to int64) []journal.Entry {
	var es []journal.Entry
	for seq := from; seq <= to; seq++ {
		kinds := []journal.Kind{journal.KindAttempt, journal.KindEffect, journal.KindComplete}
		k := kinds[(seq-1)%3]
		es = append(es, journal.Entry{
			Actor: actor,
			Seq:   seq,
			Kind:  k,
			MsgID: fmt.Sprintf("msg-%d", (seq-1)/3),
			Data:  fmt.Appendf(nil, "%s#%d", actor, seq),
		})
	}
	return es
}

func batch(partition string, epoch int64, es []journal.Entry, cps ...journal.Checkpoint) journal.Batch {
	return journal.Batch{Partition: partition, Epoch: epoch, Entries: es, Checkpoints: cps}
}

func checkpoint(actor string, seq int64) journal.Checkpoint {
	return journal.Checkpoint{Actor: actor, Seq: seq, State: fmt.Appendf(nil, "state of %s at %d", actor, seq)}
}

func mustAppend(t *testing.T, ctx context.Context, j journal.Journal, bs ...journal.Batch) {
	t.Helper()
	if err := j.Append(ctx, bs...); err != nil {
		t.Fatalf("Append: %v", err)
	}
}

func readAll(t *testing.T, ctx context.Context, j journal.Journal, actor string, from int64) []journal.Entry {
	t.Helper()
	var got []journal.Entry
	err := j.Read(ctx, actor, from, func(e journal.Entry) error {
		got = append(got, e)
		return nil
	})
	if err != nil {
		t.Fatalf("Read(%q, %d): %v", actor, from, err)
	}
	return got
}

func sameEntry(a, b journal.Entry) bool {
	return a.Actor == b.Actor && a.Seq == b.Seq && a.Kind == b.Kind && a.MsgID == b.MsgID && bytes.Equal(a.Data, b.Data)
}

func checkEntries(t *testing.T, got, want []journal.Entry) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("read %d entries, want %d", len(got), len(want))
	}
	for i := range got {
		if !sameEntry(got[i], want[i]) {
			t.Fatalf("entry %d = %+v, want %+v", i, got[i], want[i])
		}
	}
}

// checkHistory compares what Read returned with what was written. When the
// store compacts, entries at or below oldestKept (the actor's oldest kept
// checkpoint, 0 for none) may be gone if they are attempts or effects, and
// may have lost their Data if they are outcomes.
func (s *suite) checkHistory(t *testing.T, got, want []journal.Entry, oldestKept int64) {
	t.Helper()
	if !s.f.Compacts || oldestKept == 0 {
		checkEntries(t, got, want)
		return
	}
	bySeq := make(map[int64]journal.Entry, len(got))
	for i, e := range got {
		if i > 0 && e.Seq <= got[i-1].Seq {
			t.Fatalf("Read returned seq %d after %d", e.Seq, got[i-1].Seq)
		}
		bySeq[e.Seq] = e
	}
	if len(bySeq) > len(want) {
		t.Fatalf("read %d entries, want at most %d", len(got), len(want))
	}
	for _, w := range want {
		e, ok := bySeq[w.Seq]
		compactable := w.Seq <= oldestKept
		switch {
		case !ok && compactable && !w.Kind.IsOutcome():
		case !ok:
			t.Fatalf("entry %d (%s) is missing", w.Seq, w.Kind)
		case compactable && w.Kind.IsOutcome() && e.Data == nil:
			if e.Actor != w.Actor || e.Kind != w.Kind || e.MsgID != w.MsgID {
				t.Fatalf("compacted outcome %d = %+v, want %+v without data", w.Seq, e, w)
			}
		case !sameEntry(e, w):
			t.Fatalf("entry %d = %+v, want %+v", w.Seq, e, w)
		}
	}
}

// must returns a function that returns its value, failing t with what
// when its error is set: the result of a call that must not fail.
func must[T any](t *testing.T, what string) func(v T, err error) T {
	return func(v T, err error) T {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		return v
	}
}

func lastSeq(t *testing.T, ctx context.Context, j journal.Journal, actor string) int64 {
	t.Helper()
	return must[int64](t, fmt.Sprintf("LastSeq(%q)", actor))(j.LastSeq(ctx, actor))
}

func wantLastSeq(t *testing.T, ctx context.Context, j journal.Journal, actor string, want int64) {
	t.Helper()
	if got := lastSeq(t, ctx, j, actor); got != want {
		t.Fatalf("LastSeq(%q) = %d, want %d", actor, got, want)
	}
}

func epoch(t *testing.T, ctx context.Context, j journal.Journal, p string) int64 {
	t.Helper()
	return must[int64](t, fmt.Sprintf("Epoch(%q)", p))(j.Epoch(ctx, p))
}

func acquire(t *testing.T, ctx context.Context, j journal.Journal, p string) int64 {
	t.Helper()
	return must[int64](t, fmt.Sprintf("AcquireEpoch(%q)", p))(journal.AcquireEpoch(ctx, j, p))
}

func wantCheckpoint(t *testing.T, ctx context.Context, j journal.Journal, actor string, atOrBefore, wantSeq int64) {
	t.Helper()
	cp, ok, err := j.LoadCheckpoint(ctx, actor, atOrBefore)
	if err != nil {
		t.Fatalf("LoadCheckpoint(%q, %d): %v", actor, atOrBefore, err)
	}
	if wantSeq == 0 {
		if ok {
			t.Fatalf("LoadCheckpoint(%q, %d) found seq %d, want none", actor, atOrBefore, cp.Seq)
		}
		return
	}
	want := checkpoint(actor, wantSeq)
	if !ok {
		t.Fatalf("LoadCheckpoint(%q, %d) found none, want seq %d", actor, atOrBefore, wantSeq)
	}
	if cp.Actor != actor || cp.Seq != wantSeq || !bytes.Equal(cp.State, want.State) {
		t.Fatalf("LoadCheckpoint(%q, %d) = {%q %d %q}, want {%q %d %q}",
			actor, atOrBefore, cp.Actor, cp.Seq, cp.State, actor, wantSeq, want.State)
	}
}

func wantSequenceError(t *testing.T, err error, what string) {
	t.Helper()
	if !errors.Is(err, journal.ErrSequence) {
		t.Fatalf("%s: err = %v, want ErrSequence", what, err)
	}
	if errors.Is(err, journal.ErrFenced) {
		t.Fatalf("%s: err = %v also matches ErrFenced", what, err)
	}
}

func (s *suite) testAppendRead(t *testing.T) {
	j, ctx := s.setup(t)
	wantLastSeq(t, ctx, j, "counter/1", 0)

	first, second := run("counter/1", 1, 4), run("counter/1", 5, 600)
	mustAppend(t, ctx, j, batch("p0", 0, first))
	wantLastSeq(t, ctx, j, "counter/1", 4)
	mustAppend(t, ctx, j, batch("p0", 0, second))
	wantLastSeq(t, ctx, j, "counter/1", 600)

	checkEntries(t, readAll(t, ctx, j, "counter/1", 1), append(first, second...))
	wantLastSeq(t, ctx, j, "counter/2", 0)
	checkEntries(t, readAll(t, ctx, j, "counter/2", 1), nil)
}

func (s *suite) testReadFrom(t *testing.T) {
	j, ctx := s.setup(t)
	all := run("counter/1", 1, 10)
	mustAppend(t, ctx, j, batch("p0", 0, all), batch("p0", 0, run("counter/2", 1, 3)))

	checkEntries(t, readAll(t, ctx, j, "counter/1", 0), all)
	checkEntries(t, readAll(t, ctx, j, "counter/1", -5), all)
	checkEntries(t, readAll(t, ctx, j, "counter/1", 7), all[6:])
	checkEntries(t, readAll(t, ctx, j, "counter/1", 10), all[9:])
	checkEntries(t, readAll(t, ctx, j, "counter/1", 11), nil)
	checkEntries(t, readAll(t, ctx, j, "counter/1", journal.MaxSeq), nil)

	// An error from fn stops the read and comes back from Read.
	stop := errors.New("stop here")
	var n int
	err := j.Read(ctx, "counter/1", 1, func(e journal.Entry) error {
		n++
		if e.Seq == 3 {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) {
		t.Fatalf("Read returned %v, want the callback's error", err)
	}
	if n != 3 {
		t.Fatalf("callback ran %d times after returning an error at the 3rd entry", n)
	}
}

func (s *suite) testReadCallbackMayUseJournal(t *testing.T) {
	j, ctx := s.setup(t)
	mustAppend(t, ctx, j, batch("p0", 0, run("counter/1", 1, 300)))
	var n int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		err := j.Read(ctx, "counter/1", 1, func(e journal.Entry) error {
			n++
			if e.Seq%100 != 0 {
				return nil
			}
			// Replay may look things up, and may even write, while reading.
			if _, err := j.LastSeq(ctx, "counter/1"); err != nil {
				return err
			}
			seq, err := j.LastSeq(ctx, "counter/2")
			if err != nil {
				return err
			}
			return j.Append(ctx, batch("p0", 0, run("counter/2", seq+1, seq+1)))
		})
		if err != nil {
			t.Errorf("Read: %v", err)
		}
	}()
	waitDone(t, testTimeout, done, "Read calling back into the journal")
	if n != 300 {
		t.Fatalf("read %d entries, want 300", n)
	}
	wantLastSeq(t, ctx, j, "counter/2", 3)
}

func (s *suite) testAppendCopiesData(t *testing.T) {
	j, ctx := s.setup(t)
	data, state := []byte("original"), []byte("state")
	e := journal.Entry{Actor: "counter/1", Seq: 1, Kind: journal.KindComplete, MsgID: "m1", Data: data}
	mustAppend(t, ctx, j, batch("p0", 0, []journal.Entry{e}))
	// The checkpoint goes to another actor, whose entries compaction may drop.
	mustAppend(t, ctx, j, batch("p0", 0, run("counter/2", 1, 1), journal.Checkpoint{Actor: "counter/2", Seq: 1, State: state}))
	copy(data, "mutated!")
	copy(state, "xxxxx")

	got := readAll(t, ctx, j, "counter/1", 1)
	if len(got) != 1 || string(got[0].Data) != "original" {
		t.Fatalf("after the caller changed its buffer, read %+v, want data %q", got, "original")
	}
	copy(got[0].Data, "mutated!")
	got = readAll(t, ctx, j, "counter/1", 1)
	if string(got[0].Data) != "original" {
		t.Fatalf("changing Data returned by Read changed the store: %q", got[0].Data)
	}
	cp, ok, err := j.LoadCheckpoint(ctx, "counter/2", journal.MaxSeq)
	if err != nil || !ok || string(cp.State) != "state" {
		t.Fatalf("LoadCheckpoint = %q, %v, %v; want %q", cp.State, ok, err, "state")
	}
}

func (s *suite) testEmptyAppend(t *testing.T) {
	j, ctx := s.setup(t)
	mustAppend(t, ctx, j)
	mustAppend(t, ctx, j, batch("p0", 0, nil))
	wantLastSeq(t, ctx, j, "counter/1", 0)
}

func (s *suite) testInvalidInput(t *testing.T) {
	j, ctx := s.setup(t)
	good := run("counter/1", 1, 2)
	bad := []journal.Entry{{Actor: "", Seq: 1, Kind: journal.KindAttempt, MsgID: "m"}}
	wantInvalid(t, j.Append(ctx, batch("p0", 0, good), batch("p0", 0, bad)), "an entry without an actor")
	badCP := journal.Checkpoint{Actor: "", Seq: 1}
	wantInvalid(t, j.Append(ctx, batch("p0", 0, good, badCP)), "a checkpoint without an actor")
	for _, k := range []journal.Kind{0, 5} {
		bad := []journal.Entry{{Actor: "counter/2", Seq: 1, Kind: k, MsgID: "m"}}
		wantInvalid(t, j.Append(ctx, batch("p0", 0, good), batch("p0", 0, bad)), fmt.Sprintf("an entry of kind %d", k))
	}
	wantLastSeq(t, ctx, j, "counter/1", 0)
	wantLastSeq(t, ctx, j, "counter/2", 0)
}

// wantInvalid checks that err is a permanent ErrInvalid, and no other
// refusal.
func wantInvalid(t *testing.T, err error, what string) {
	t.Helper()
	wantRefusal(t, err, journal.ErrInvalid, "Append with "+what)
}

// wantDuplicateOutcome checks that err is a permanent ErrDuplicateOutcome,
// and no other refusal.
func wantDuplicateOutcome(t *testing.T, err error, what string) {
	t.Helper()
	wantRefusal(t, err, journal.ErrDuplicateOutcome, what)
}

// wantRefusal checks that err matches want, one of Append's permanent
// refusals, and no other of them.
func wantRefusal(t *testing.T, err, want error, what string) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("%s: err = %v, want %v", what, err, want)
	}
	for _, other := range []error{journal.ErrInvalid, journal.ErrSequence, journal.ErrFenced, journal.ErrDuplicateOutcome} {
		if other != want && errors.Is(err, other) {
			t.Fatalf("%s: err = %v also matches another refusal", what, err)
		}
	}
	if !journal.IsPermanent(err) {
		t.Fatalf("%s: IsPermanent(%v) = false", what, err)
	}
}

// Actors and message IDs that break the identifier limits (1..1024 bytes
// of UTF-8 without control characters) are refused with ErrInvalid: none
// of the call is written, and the journal goes on taking other calls.
func (s *suite) testInvalidIdentifiers(t *testing.T) {
	j, ctx := s.setup(t)
	long := string(bytes.Repeat([]byte("m"), 1025))
	entry := func(actor, msgID string) journal.Entry {
		return journal.Entry{Actor: actor, Seq: 1, Kind: journal.KindComplete, MsgID: msgID, Data: []byte("bad")}
	}
	for i, tc := range []struct {
		what string
		b    journal.Batch
	}{
		{"a 1025-byte message ID", batch("p1", 0, []journal.Entry{entry("counter/bad", long)})},
		{"a NUL in the actor", batch("p1", 0, []journal.Entry{entry("counter/\x00", "m")})},
		{"invalid UTF-8 in the message ID", batch("p1", 0, []journal.Entry{entry("counter/bad", "m\xff")})},
		{"a newline in the message ID", batch("p1", 0, []journal.Entry{entry("counter/bad", "m\n")})},
		{"an empty message ID", batch("p1", 0, []journal.Entry{entry("counter/bad", "")})},
		{"invalid UTF-8 in the actor", batch("p1", 0, []journal.Entry{entry("counter/\xc3", "m")})},
		{"a 1025-byte actor", batch("p1", 0, []journal.Entry{entry("counter/"+long[:1017], "m")})},
		{"an actor that is not type/id", batch("p1", 0, []journal.Entry{entry("counter", "m")})},
		{"a host key with a control character", batch("p1", 0, []journal.Entry{entry("$unaddressed:\x1b[2J", "m")})},
		{"a checkpoint of an actor with a NUL", batch("p1", 0, run("counter/bad", 1, 1), journal.Checkpoint{Actor: "counter/bad\x00", Seq: 1})},
	} {
		// A good batch before the bad one, and a good actor in the bad batch.
		good := fmt.Sprintf("counter/good-%d", i)
		tc.b.Entries = append(run(good+"-b", 1, 1), tc.b.Entries...)
		wantInvalid(t, j.Append(ctx, batch("p0", 0, run(good, 1, 3), checkpoint(good, 3)), tc.b), tc.what)
		wantLastSeq(t, ctx, j, good, 0)
		wantLastSeq(t, ctx, j, good+"-b", 0)
		wantLastSeq(t, ctx, j, "counter/bad", 0)
		wantCheckpoint(t, ctx, j, good, journal.MaxSeq, 0)
	}
	// Later calls go through; so do the host's own "$" keys.
	mustAppend(t, ctx, j, batch("p0", 0, run("counter/good-0", 1, 3), checkpoint("counter/good-0", 3)),
		batch("p1", 0, run("$unaddressed:mailbox/3", 1, 2)))
	wantLastSeq(t, ctx, j, "counter/good-0", 3)
	checkEntries(t, readAll(t, ctx, j, "$unaddressed:mailbox/3", 1), run("$unaddressed:mailbox/3", 1, 2))
}

// Identifiers right at the limits, with characters of two, three and four
// bytes and characters some stores treat specially, come back byte-exact.
func (s *suite) testIdentifiersAtTheLimit(t *testing.T) {
	j, ctx := s.setup(t)
	fill := func(prefix string, n int) string {
		return prefix + string(bytes.Repeat([]byte("x"), n-len(prefix)-len("€😀"))) + "€😀"
	}
	actor := fill("tÿpe/{id}:e:%'\"\\é", 1024)
	msgs := []string{fill("m-1-ü'\"%_*?[", 1024), fill("m-2-{o}", 1024)}
	if len(actor) != 1024 || len(msgs[0]) != 1024 || len(msgs[1]) != 1024 {
		t.Fatalf("test bug: %d, %d, %d bytes", len(actor), len(msgs[0]), len(msgs[1]))
	}
	es := []journal.Entry{
		{Actor: actor, Seq: 1, Kind: journal.KindAttempt, MsgID: msgs[0], Data: []byte("try")},
		{Actor: actor, Seq: 2, Kind: journal.KindEffect, MsgID: msgs[0], Data: []byte("effect")},
		{Actor: actor, Seq: 3, Kind: journal.KindComplete, MsgID: msgs[0], Data: []byte("done")},
		{Actor: actor, Seq: 4, Kind: journal.KindDeadLetter, MsgID: msgs[1], Data: []byte("dlq")},
	}
	cp := journal.Checkpoint{Actor: actor, Seq: 4, State: []byte("state")}
	mustAppend(t, ctx, j, batch("p0", 0, es, cp))
	s.checkHistory(t, readAll(t, ctx, j, actor, 1), es, 4)
	wantLastSeq(t, ctx, j, actor, 4)
	for i, want := range []journal.Entry{es[2], es[3]} {
		got, ok, err := j.Outcome(ctx, actor, msgs[i])
		if err != nil || !ok || got.Actor != actor || got.MsgID != msgs[i] || got.Seq != want.Seq || got.Kind != want.Kind {
			t.Fatalf("Outcome of message %d = %+v, %v, %v; want seq %d", i, got, ok, err, want.Seq)
		}
	}
	got, ok, err := j.LoadCheckpoint(ctx, actor, journal.MaxSeq)
	if err != nil || !ok || got.Actor != actor || got.Seq != 4 || string(got.State) != "state" {
		t.Fatalf("LoadCheckpoint = %+v, %v, %v", got, ok, err)
	}
	// A second outcome of either message is refused at the limit too.
	wantDuplicateOutcome(t, j.Append(ctx, batch("p0", 0, []journal.Entry{
		{Actor: actor, Seq: 5, Kind: journal.KindComplete, MsgID: msgs[1]},
	})), "a second outcome of a 1024-byte message ID")
}

// A message has at most one outcome: a second completion or dead letter
// of it is refused with ErrDuplicateOutcome, whole calls at a time, while
// attempts and effects of it, and outcomes of the same ID for another
// actor, are fine.
func (s *suite) testDuplicateOutcome(t *testing.T) {
	j, ctx := s.setup(t)
	const a = "counter/1"
	first := []journal.Entry{
		{Actor: a, Seq: 1, Kind: journal.KindAttempt, MsgID: "m1", Data: []byte("try")},
		{Actor: a, Seq: 2, Kind: journal.KindEffect, MsgID: "m1", Data: []byte("effect")},
		{Actor: a, Seq: 3, Kind: journal.KindComplete, MsgID: "m1", Data: []byte("first")},
	}
	mustAppend(t, ctx, j, batch("p0", 0, first))
	wantOutcome := func(msgID string, want journal.Entry) {
		t.Helper()
		got, ok, err := j.Outcome(ctx, a, msgID)
		if err != nil || !ok || !sameEntry(got, want) {
			t.Fatalf("Outcome(%q) = %+v, %v, %v; want %+v", msgID, got, ok, err, want)
		}
	}

	again := journal.Entry{Actor: a, Seq: 4, Kind: journal.KindComplete, MsgID: "m1", Data: []byte("second")}
	wantDuplicateOutcome(t, j.Append(ctx, batch("p0", 0, []journal.Entry{again})), "a second Complete in a later Append")
	dead := again
	dead.Kind = journal.KindDeadLetter
	// With other actors' batches and a checkpoint in the call: none of it lands.
	wantDuplicateOutcome(t, j.Append(ctx,
		batch("p1", 0, run("counter/2", 1, 3), checkpoint("counter/2", 3)),
		batch("p0", 0, []journal.Entry{dead}, checkpoint(a, 3)),
	), "a DeadLetter after a Complete, among other batches")
	wantLastSeq(t, ctx, j, a, 3)
	wantLastSeq(t, ctx, j, "counter/2", 0)
	wantCheckpoint(t, ctx, j, a, journal.MaxSeq, 0)
	wantCheckpoint(t, ctx, j, "counter/2", journal.MaxSeq, 0)
	checkEntries(t, readAll(t, ctx, j, a, 1), first)
	wantOutcome("m1", first[2])

	// Attempts and effects of a message with an outcome are not outcomes;
	// the same ID of another actor is another message.
	more := []journal.Entry{
		{Actor: a, Seq: 4, Kind: journal.KindAttempt, MsgID: "m1"},
		{Actor: a, Seq: 5, Kind: journal.KindEffect, MsgID: "m1"},
		{Actor: a, Seq: 6, Kind: journal.KindDeadLetter, MsgID: "m2", Data: []byte("dlq")},
	}
	mustAppend(t, ctx, j, batch("p0", 0, more), batch("p1", 0, []journal.Entry{
		{Actor: "counter/2", Seq: 1, Kind: journal.KindComplete, MsgID: "m1"},
	}))
	wantOutcome("m1", first[2])
	wantOutcome("m2", more[2])

	// A Complete after a DeadLetter is refused as well.
	wantDuplicateOutcome(t, j.Append(ctx, batch("p0", 0, []journal.Entry{
		{Actor: a, Seq: 7, Kind: journal.KindComplete, MsgID: "m2"},
	})), "a Complete after a DeadLetter")
	wantLastSeq(t, ctx, j, a, 6)
	wantOutcome("m2", more[2])

	// A sequence conflict is still reported as one, duplicate or not: a
	// retry of a call that got in learns that it did.
	wantSequenceError(t, j.Append(ctx, batch("p0", 0, more)), "the same call again")
	mustAppend(t, ctx, j, batch("p0", 0, run(a, 7, 7)))
}

// Two outcomes of one message within one Append, in one batch or in two,
// are refused as well, and the call writes nothing.
func (s *suite) testDuplicateOutcomeInOneAppend(t *testing.T) {
	j, ctx := s.setup(t)
	const a = "counter/1"
	mustAppend(t, ctx, j, batch("p0", 0, run(a, 1, 3)))
	twice := []journal.Entry{
		{Actor: a, Seq: 4, Kind: journal.KindAttempt, MsgID: "m"},
		{Actor: a, Seq: 5, Kind: journal.KindComplete, MsgID: "m", Data: []byte("once")},
		{Actor: a, Seq: 6, Kind: journal.KindComplete, MsgID: "m", Data: []byte("twice")},
	}
	wantDuplicateOutcome(t, j.Append(ctx, batch("p1", 0, run("counter/2", 1, 2)), batch("p0", 0, twice)),
		"two Completes in one batch")
	wantDuplicateOutcome(t, j.Append(ctx,
		batch("p0", 0, twice[:2]),
		batch("p1", 0, run("counter/2", 1, 2)),
		batch("p0", 0, []journal.Entry{{Actor: a, Seq: 6, Kind: journal.KindDeadLetter, MsgID: "m"}}, checkpoint(a, 6)),
	), "a Complete and a DeadLetter in two batches of one call")
	wantLastSeq(t, ctx, j, a, 3)
	wantLastSeq(t, ctx, j, "counter/2", 0)
	wantCheckpoint(t, ctx, j, a, journal.MaxSeq, 0)
	if o, ok, err := j.Outcome(ctx, a, "m"); err != nil || ok {
		t.Fatalf("Outcome(m) = %+v, %v, %v after refused calls; want none", o, ok, err)
	}

	// One outcome per message, many messages, in one call: fine.
	mustAppend(t, ctx, j, batch("p0", 0, twice[:2]), batch("p0", 0, []journal.Entry{
		{Actor: a, Seq: 6, Kind: journal.KindComplete, MsgID: "m-other"},
	}))
	wantLastSeq(t, ctx, j, a, 6)
	o, ok, err := j.Outcome(ctx, a, "m")
	if err != nil || !ok || o.Seq != 5 || string(o.Data) != "once" {
		t.Fatalf("Outcome(m) = %+v, %v, %v; want seq 5", o, ok, err)
	}
}

func (s *suite) testSequenceGap(t *testing.T) {
	j, ctx := s.setup(t)
	if err := j.Append(ctx, batch("p0", 0, run("counter/1", 2, 3))); err == nil {
		t.Fatal("Append accepted seq 2 as an actor's first entry")
	} else {
		wantSequenceError(t, err, "first entry at seq 2")
	}
	wantLastSeq(t, ctx, j, "counter/1", 0)

	mustAppend(t, ctx, j, batch("p0", 0, run("counter/1", 1, 3)))
	wantSequenceError(t, j.Append(ctx, batch("p0", 0, run("counter/1", 5, 6))), "gap after seq 3")
	wantLastSeq(t, ctx, j, "counter/1", 3)
	checkEntries(t, readAll(t, ctx, j, "counter/1", 1), run("counter/1", 1, 3))
}

func (s *suite) testSequenceDuplicate(t *testing.T) {
	j, ctx := s.setup(t)
	mustAppend(t, ctx, j, batch("p0", 0, run("counter/1", 1, 3)))
	dup := run("counter/1", 3, 4)
	dup[0].Data = []byte("overwritten")
	wantSequenceError(t, j.Append(ctx, batch("p0", 0, dup)), "rewriting seq 3")
	wantSequenceError(t, j.Append(ctx, batch("p0", 0, run("counter/1", 1, 1))), "rewriting seq 1")
	zero := []journal.Entry{{Actor: "counter/1", Seq: 0, Kind: journal.KindAttempt, MsgID: "m"}}
	wantSequenceError(t, j.Append(ctx, batch("p0", 0, zero)), "seq 0")
	wantLastSeq(t, ctx, j, "counter/1", 3)
	checkEntries(t, readAll(t, ctx, j, "counter/1", 1), run("counter/1", 1, 3))
}

func (s *suite) testSequenceWithinBatch(t *testing.T) {
	j, ctx := s.setup(t)
	es := append(run("counter/1", 1, 2), run("counter/1", 4, 4)...)
	wantSequenceError(t, j.Append(ctx, batch("p0", 0, es)), "gap inside a batch")
	es = append(run("counter/1", 1, 2), run("counter/1", 2, 2)...)
	wantSequenceError(t, j.Append(ctx, batch("p0", 0, es)), "repeat inside a batch")
	es = append(run("counter/1", 2, 2), run("counter/1", 1, 1)...)
	wantSequenceError(t, j.Append(ctx, batch("p0", 0, es)), "out of order inside a batch")
	wantLastSeq(t, ctx, j, "counter/1", 0)
}

func (s *suite) testSequenceAcrossBatches(t *testing.T) {
	j, ctx := s.setup(t)
	// One actor's entries may be spread over several batches of one call,
	// interleaved with other actors', as long as they stay in order.
	a, b := run("counter/a", 1, 6), run("counter/b", 1, 4)
	mustAppend(t, ctx, j,
		batch("p0", 0, append(slices.Clone(a[:2]), b[:2]...)),
		batch("p0", 0, append(slices.Clone(b[2:]), a[2:]...)),
	)
	checkEntries(t, readAll(t, ctx, j, "counter/a", 1), a)
	checkEntries(t, readAll(t, ctx, j, "counter/b", 1), b)

	err := j.Append(ctx,
		batch("p0", 0, run("counter/a", 8, 8)),
		batch("p0", 0, run("counter/a", 7, 7)),
	)
	wantSequenceError(t, err, "an actor's entries out of order across batches")
	wantLastSeq(t, ctx, j, "counter/a", 6)
}

func (s *suite) testSequenceErrorWritesNothing(t *testing.T) {
	j, ctx := s.setup(t)
	mustAppend(t, ctx, j, batch("p0", 0, run("counter/1", 1, 2)))
	err := j.Append(ctx,
		batch("p0", 0, run("counter/2", 1, 5), checkpoint("counter/2", 5)),
		batch("p1", 0, run("counter/3", 1, 2)),
		batch("p1", 0, run("counter/1", 4, 4)), // gap: counter/1 is at 2
	)
	wantSequenceError(t, err, "one bad batch among good ones")
	wantLastSeq(t, ctx, j, "counter/1", 2)
	wantLastSeq(t, ctx, j, "counter/2", 0)
	wantLastSeq(t, ctx, j, "counter/3", 0)
	wantCheckpoint(t, ctx, j, "counter/2", journal.MaxSeq, 0)
}

func (s *suite) testEpochCompareAndSet(t *testing.T) {
	j, ctx := s.setup(t)
	if e := epoch(t, ctx, j, "p0"); e != 0 {
		t.Fatalf("epoch of a partition never set = %d, want 0", e)
	}
	// Each move, and the epoch after it: one from a stale epoch changes
	// nothing.
	for _, m := range []struct {
		old, next int64
		ok        bool
		epoch     int64
	}{{1, 2, false, 0}, {0, 1, true, 1}, {0, 5, false, 1}, {1, 7, true, 7}} {
		before := epoch(t, ctx, j, "p0")
		ok, err := j.CompareAndSetEpoch(ctx, "p0", m.old, m.next)
		if err != nil {
			t.Fatalf("CompareAndSetEpoch(p0, %d, %d): %v", m.old, m.next, err)
		}
		if ok != m.ok {
			t.Fatalf("CompareAndSetEpoch(p0, %d, %d) = %v while the epoch is %d, want %v", m.old, m.next, ok, before, m.ok)
		}
		if e := epoch(t, ctx, j, "p0"); e != m.epoch {
			t.Fatalf("epoch = %d after CompareAndSetEpoch(p0, %d, %d), want %d", e, m.old, m.next, m.epoch)
		}
	}
	if e := epoch(t, ctx, j, "p1"); e != 0 {
		t.Fatalf("epoch of another partition = %d, want 0", e)
	}

	// Epochs never move backward: a fenced zombie must stay fenced.
	if ok, err := j.CompareAndSetEpoch(ctx, "p0", 7, 3); ok {
		t.Fatal("CompareAndSetEpoch moved the epoch from 7 back to 3")
	} else if err == nil {
		t.Fatal("CompareAndSetEpoch(p0, 7, 3) returned no error for a backward move")
	}
	if e := epoch(t, ctx, j, "p0"); e != 7 {
		t.Fatalf("epoch = %d after a refused backward move, want 7", e)
	}
}

func (s *suite) testAcquireEpoch(t *testing.T) {
	j, ctx := s.setup(t)
	if e := acquire(t, ctx, j, "p0"); e != 1 {
		t.Fatalf("first AcquireEpoch = %d, want 1", e)
	}
	if e := acquire(t, ctx, j, "p0"); e != 2 {
		t.Fatalf("second AcquireEpoch = %d, want 2", e)
	}
	if e := acquire(t, ctx, j, "p1"); e != 1 {
		t.Fatalf("AcquireEpoch of another partition = %d, want 1", e)
	}
}

func (s *suite) testAcquireEpochConcurrent(t *testing.T) {
	j, ctx := s.setup(t)
	const n = 8
	got := make([]int64, n)
	goAll(t, n, func(i int) {
		e, err := journal.AcquireEpoch(ctx, j, "p0")
		if err != nil {
			t.Errorf("AcquireEpoch: %v", err)
		}
		got[i] = e
	})
	slices.Sort(got)
	for i, e := range got {
		if e != int64(i+1) {
			t.Fatalf("concurrent AcquireEpoch returned %v, want 1..%d each once", got, n)
		}
	}
	if e := epoch(t, ctx, j, "p0"); e != n {
		t.Fatalf("epoch = %d after %d acquisitions", e, n)
	}
}

func wantFenced(t *testing.T, err error, fenced []string, notFenced ...string) {
	t.Helper()
	if !errors.Is(err, journal.ErrFenced) {
		t.Fatalf("err = %v, want ErrFenced", err)
	}
	var fe *journal.FencedError
	if !errors.As(err, &fe) {
		t.Fatalf("err = %v (%T), want a *journal.FencedError", err, err)
	}
	got := slices.Sorted(slices.Values(fe.Partitions))
	want := slices.Sorted(slices.Values(fenced))
	if !slices.Equal(got, want) {
		t.Fatalf("FencedError names %v, want %v", fe.Partitions, fenced)
	}
	for _, p := range fenced {
		if !journal.Fenced(err, p) {
			t.Fatalf("journal.Fenced(err, %q) = false", p)
		}
	}
	for _, p := range notFenced {
		if journal.Fenced(err, p) {
			t.Fatalf("journal.Fenced(err, %q) = true for a current partition", p)
		}
	}
	if errors.Is(err, journal.ErrSequence) {
		t.Fatalf("err = %v also matches ErrSequence", err)
	}
}

func (s *suite) testFencedBatchSkipped(t *testing.T) {
	j, ctx := s.setup(t)
	old := acquire(t, ctx, j, "p1")
	cur1 := acquire(t, ctx, j, "p1") // a new owner takes p1: old is stale
	cur2 := acquire(t, ctx, j, "p2")

	err := j.Append(ctx,
		batch("p1", old, run("counter/zombie", 1, 3), checkpoint("counter/zombie", 3)),
		batch("p2", cur2, run("counter/live", 1, 3), checkpoint("counter/live", 3)),
		batch("p1", cur1, run("counter/owner", 1, 2)),
	)
	wantFenced(t, err, []string{"p1"}, "p2")

	wantLastSeq(t, ctx, j, "counter/zombie", 0)
	wantCheckpoint(t, ctx, j, "counter/zombie", journal.MaxSeq, 0)
	s.checkHistory(t, readAll(t, ctx, j, "counter/live", 1), run("counter/live", 1, 3), 3)
	wantCheckpoint(t, ctx, j, "counter/live", journal.MaxSeq, 3)
	// The current owner of p1, in the same call, was written too.
	checkEntries(t, readAll(t, ctx, j, "counter/owner", 1), run("counter/owner", 1, 2))

	// The zombie stays fenced; the owner keeps writing.
	wantFenced(t, j.Append(ctx, batch("p1", old, run("counter/zombie", 1, 1))), []string{"p1"})
	mustAppend(t, ctx, j, batch("p1", cur1, run("counter/owner", 3, 3)))
}

func (s *suite) testFencedEpochZero(t *testing.T) {
	j, ctx := s.setup(t)
	// A partition whose epoch was never set accepts epoch 0 ...
	mustAppend(t, ctx, j, batch("p0", 0, run("counter/1", 1, 2)))
	// ... but not an epoch nobody acquired.
	wantFenced(t, j.Append(ctx, batch("p0", 1, run("counter/1", 3, 3))), []string{"p0"})

	e := acquire(t, ctx, j, "p0")
	wantFenced(t, j.Append(ctx, batch("p0", 0, run("counter/1", 3, 3))), []string{"p0"})
	wantFenced(t, j.Append(ctx, batch("p0", e+1, run("counter/1", 3, 3))), []string{"p0"})
	mustAppend(t, ctx, j, batch("p0", e, run("counter/1", 3, 3)))
	wantLastSeq(t, ctx, j, "counter/1", 3)
}

func (s *suite) testFencedAll(t *testing.T) {
	j, ctx := s.setup(t)
	acquire(t, ctx, j, "p1")
	acquire(t, ctx, j, "p2")
	err := j.Append(ctx,
		batch("p1", 0, run("counter/1", 1, 2), checkpoint("counter/1", 2)),
		batch("p2", 0, run("counter/2", 1, 2)),
		batch("p1", 0, nil), // a partition is named once
	)
	wantFenced(t, err, []string{"p1", "p2"})
	wantLastSeq(t, ctx, j, "counter/1", 0)
	wantLastSeq(t, ctx, j, "counter/2", 0)
	wantCheckpoint(t, ctx, j, "counter/1", journal.MaxSeq, 0)

	// A batch without entries still learns that it is fenced.
	wantFenced(t, j.Append(ctx, batch("p1", 0, nil)), []string{"p1"})
}

func (s *suite) testFencedNotSequenceChecked(t *testing.T) {
	j, ctx := s.setup(t)
	acquire(t, ctx, j, "p1")
	e2 := acquire(t, ctx, j, "p2")
	// The stale batch would also break counter/1's sequence, but it is
	// skipped, not checked: the fence is what the writer must learn.
	err := j.Append(ctx,
		batch("p1", 0, run("counter/1", 5, 6)),
		batch("p2", e2, run("counter/2", 1, 2)),
	)
	wantFenced(t, err, []string{"p1"}, "p2")
	wantLastSeq(t, ctx, j, "counter/1", 0)
	wantLastSeq(t, ctx, j, "counter/2", 2)
}

func (s *suite) testCheckpoints(t *testing.T) {
	j, ctx := s.setup(t)
	const a = "counter/1"
	wantCheckpoint(t, ctx, j, a, journal.MaxSeq, 0)
	mustAppend(t, ctx, j, batch("p0", 0, run(a, 1, 3), checkpoint(a, 3)))
	mustAppend(t, ctx, j, batch("p0", 0, run(a, 4, 6), checkpoint(a, 6)))
	// Several checkpoints of one actor in one batch.
	mustAppend(t, ctx, j, batch("p0", 0, run(a, 7, 9), checkpoint(a, 8), checkpoint(a, 9)))

	keep := s.f.KeepCheckpoints
	if keep != 0 && keep < 3 {
		t.Skipf("store keeps only %d checkpoints; this test needs 3", keep)
	}
	wantCheckpoint(t, ctx, j, a, journal.MaxSeq, 9)
	wantCheckpoint(t, ctx, j, a, 9, 9)
	wantCheckpoint(t, ctx, j, a, 8, 8)
	wantCheckpoint(t, ctx, j, a, 7, 6)
	wantCheckpoint(t, ctx, j, a, 6, 6)
	if keep == 0 {
		wantCheckpoint(t, ctx, j, a, 5, 3)
		wantCheckpoint(t, ctx, j, a, 3, 3)
	}
	wantCheckpoint(t, ctx, j, a, 2, 0)
	wantCheckpoint(t, ctx, j, a, 0, 0)
	wantCheckpoint(t, ctx, j, "counter/2", journal.MaxSeq, 0)
}

func (s *suite) testCheckpointAtomic(t *testing.T) {
	j, ctx := s.setup(t)
	const a = "counter/1"
	mustAppend(t, ctx, j, batch("p0", 0, run(a, 1, 2), checkpoint(a, 2)))
	// A failing append stores neither its entries nor its checkpoint.
	err := j.Append(ctx,
		batch("p0", 0, run(a, 3, 4), checkpoint(a, 4)),
		batch("p0", 0, run("counter/2", 2, 2)),
	)
	wantSequenceError(t, err, "append with a checkpoint and a gap")
	wantCheckpoint(t, ctx, j, a, journal.MaxSeq, 2)
	wantLastSeq(t, ctx, j, a, 2)

	// A checkpoint alone, of entries already written, is fine.
	mustAppend(t, ctx, j, batch("p0", 0, run(a, 3, 4)))
	mustAppend(t, ctx, j, batch("p0", 0, nil, checkpoint(a, 4)))
	wantCheckpoint(t, ctx, j, a, journal.MaxSeq, 4)
}

func (s *suite) testCheckpointBeyondLastSeq(t *testing.T) {
	j, ctx := s.setup(t)
	const a = "counter/1"
	mustAppend(t, ctx, j, batch("p0", 0, run(a, 1, 2)))
	// A checkpoint of state after an entry the journal does not hold would
	// let activation skip history that never happened.
	wantSequenceError(t, j.Append(ctx, batch("p0", 0, run(a, 3, 3), checkpoint(a, 5))), "checkpoint past the last entry")
	wantSequenceError(t, j.Append(ctx, batch("p0", 0, nil, checkpoint("counter/2", 1))), "checkpoint of an actor without entries")
	wantLastSeq(t, ctx, j, a, 2)
	wantCheckpoint(t, ctx, j, a, journal.MaxSeq, 0)
}

func (s *suite) testKeepCheckpoints(t *testing.T) {
	j, ctx := s.setup(t)
	const a = "counter/1"
	keep := s.f.KeepCheckpoints
	n := 6
	if keep > 0 {
		n = keep + 3
	}
	for seq := int64(1); seq <= int64(n); seq++ {
		mustAppend(t, ctx, j, batch("p0", 0, run(a, seq, seq), checkpoint(a, seq)))
	}
	oldestKept := int64(1)
	if keep > 0 {
		oldestKept = int64(n - keep + 1)
	}
	for seq := int64(1); seq <= int64(n); seq++ {
		if seq < oldestKept {
			wantCheckpoint(t, ctx, j, a, seq, 0)
		} else {
			wantCheckpoint(t, ctx, j, a, seq, seq)
		}
	}
	wantCheckpoint(t, ctx, j, a, journal.MaxSeq, int64(n))
}

func (s *suite) testCompactionKeepsOutcomes(t *testing.T) {
	j, ctx := s.setup(t)
	const a = "counter/1"
	all := run(a, 1, 60)
	// A checkpoint after every completion, as a busy actor would write.
	for i := 0; i < len(all); i += 3 {
		es := all[i : i+3]
		mustAppend(t, ctx, j, batch("p0", 0, es, checkpoint(a, es[2].Seq)))
	}
	oldestKept := int64(3)
	if k := s.f.KeepCheckpoints; k > 0 {
		oldestKept = int64(60 - 3*(k-1))
	}
	wantCheckpoint(t, ctx, j, a, journal.MaxSeq, 60)
	wantCheckpoint(t, ctx, j, a, oldestKept, oldestKept)
	wantLastSeq(t, ctx, j, a, 60)

	s.checkHistory(t, readAll(t, ctx, j, a, 1), all, oldestKept)
	for _, want := range all {
		if want.Kind.IsOutcome() {
			o, ok, err := j.Outcome(ctx, a, want.MsgID)
			if err != nil || !ok || o.Seq != want.Seq || o.Kind != want.Kind {
				t.Fatalf("Outcome(%q) = %+v, %v, %v; want seq %d", want.MsgID, o, ok, err, want.Seq)
			}
		}
	}
	// The history goes on after compaction.
	mustAppend(t, ctx, j, batch("p0", 0, run(a, 61, 61)))
	wantLastSeq(t, ctx, j, a, 61)
}

func (s *suite) testOutcome(t *testing.T) {
	j, ctx := s.setup(t)
	const a = "counter/1"
	es := []journal.Entry{
		{Actor: a, Seq: 1, Kind: journal.KindAttempt, MsgID: "m1", Data: []byte("try")},
		{Actor: a, Seq: 2, Kind: journal.KindEffect, MsgID: "m1", Data: []byte("effect")},
		{Actor: a, Seq: 3, Kind: journal.KindComplete, MsgID: "m1", Data: []byte("done")},
		{Actor: a, Seq: 4, Kind: journal.KindAttempt, MsgID: "m2", Data: []byte("boom")},
		{Actor: a, Seq: 5, Kind: journal.KindDeadLetter, MsgID: "m2", Data: []byte("dlq")},
		{Actor: a, Seq: 6, Kind: journal.KindAttempt, MsgID: "m3"},
		{Actor: a, Seq: 7, Kind: journal.KindEffect, MsgID: "m3"},
		{Actor: a, Seq: 8, Kind: journal.KindComplete, MsgID: "m4"}, // no data
	}
	mustAppend(t, ctx, j, batch("p0", 0, es))
	mustAppend(t, ctx, j, batch("p0", 0, []journal.Entry{{Actor: "counter/2", Seq: 1, Kind: journal.KindComplete, MsgID: "m3"}}))

	for _, tc := range []struct {
		actor, msg string
		want       int // index into es, -1 for none
	}{
		{a, "m1", 2},
		{a, "m2", 4},
		{a, "m3", -1}, // attempts and effects are not outcomes
		{a, "m4", 7},
		{a, "m5", -1},
		{"counter/3", "m1", -1},
	} {
		got, ok, err := j.Outcome(ctx, tc.actor, tc.msg)
		if err != nil {
			t.Fatalf("Outcome(%q, %q): %v", tc.actor, tc.msg, err)
		}
		if tc.want < 0 {
			if ok {
				t.Fatalf("Outcome(%q, %q) = %+v, want none", tc.actor, tc.msg, got)
			}
			continue
		}
		if !ok || !sameEntry(got, es[tc.want]) {
			t.Fatalf("Outcome(%q, %q) = %+v, %v; want %+v", tc.actor, tc.msg, got, ok, es[tc.want])
		}
	}
	// Message IDs are per actor.
	got, ok, err := j.Outcome(ctx, "counter/2", "m3")
	if err != nil || !ok || got.Actor != "counter/2" || got.Seq != 1 {
		t.Fatalf("Outcome(counter/2, m3) = %+v, %v, %v", got, ok, err)
	}
}

func (s *suite) testConcurrentActors(t *testing.T) {
	j, ctx := s.setup(t)
	const writers, appends, per = 8, 25, 4
	goAll(t, writers, func(w int) {
		for i := range appends {
			from := int64(i*per + 1)
			// Each call carries two actors of this writer, in two partitions.
			err := j.Append(ctx,
				batch(fmt.Sprintf("p%d", w%3), 0, run(fmt.Sprintf("w%d/a", w), from, from+per-1)),
				batch(fmt.Sprintf("p%d", (w+1)%3), 0, run(fmt.Sprintf("w%d/b", w), from, from+per-1)),
			)
			if err != nil {
				t.Errorf("writer %d, append %d: %v", w, i, err)
				return
			}
		}
	})
	for w := range writers {
		for _, suffix := range []string{"a", "b"} {
			actor := fmt.Sprintf("w%d/%s", w, suffix)
			checkEntries(t, readAll(t, ctx, j, actor, 1), run(actor, 1, appends*per))
		}
	}
}

func (s *suite) testRacingWriters(t *testing.T) {
	j, ctx := s.setup(t)
	const a, rounds, racers = "counter/1", 20, 2
	for round := int64(1); round <= rounds; round++ {
		errs := make([]error, racers)
		goAll(t, racers, func(i int) {
			e := journal.Entry{Actor: a, Seq: round, Kind: journal.KindAttempt, MsgID: "m", Data: fmt.Appendf(nil, "racer %d", i)}
			errs[i] = j.Append(ctx, batch("p0", 0, []journal.Entry{e}))
		})
		winner := -1
		for i, err := range errs {
			switch {
			case err == nil && winner >= 0:
				t.Fatalf("round %d: racers %d and %d both wrote seq %d", round, winner, i, round)
			case err == nil:
				winner = i
			default:
				wantSequenceError(t, err, fmt.Sprintf("round %d, losing racer %d", round, i))
			}
		}
		if winner < 0 {
			t.Fatalf("round %d: no racer won: %v", round, errs)
		}
		got := readAll(t, ctx, j, a, round)
		if len(got) != 1 || string(got[0].Data) != fmt.Sprintf("racer %d", winner) {
			t.Fatalf("round %d: stored %+v, want the winner's (racer %d) entry", round, got, winner)
		}
	}
	wantLastSeq(t, ctx, j, a, rounds)
}

func (s *suite) testPersistence(t *testing.T) {
	if s.f.Reopen == nil {
		t.Skip("store does not persist across Close (Features.Reopen is nil)")
	}
	j, ctx := s.setup(t)
	e := acquire(t, ctx, j, "p1")
	withHorizon := batch("p1", e, run("counter/1", 1, 6), checkpoint("counter/1", 3))
	withHorizon.Horizon = 4096
	mustAppend(t, ctx, j, withHorizon, batch("p2", 0, run("counter/2", 1, 2)))
	if err := j.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	j = s.f.Reopen(t, j)
	if j == nil {
		t.Fatal("Features.Reopen returned a nil journal")
	}
	t.Cleanup(func() { _ = j.Close() })
	s.checkHistory(t, readAll(t, ctx, j, "counter/1", 1), run("counter/1", 1, 6), 3)
	checkEntries(t, readAll(t, ctx, j, "counter/2", 1), run("counter/2", 1, 2))
	wantLastSeq(t, ctx, j, "counter/1", 6)
	wantCheckpoint(t, ctx, j, "counter/1", journal.MaxSeq, 3)
	if got := epoch(t, ctx, j, "p1"); got != e {
		t.Fatalf("epoch after reopen = %d, want %d", got, e)
	}
	wantHorizon(t, ctx, j, "p1", 4096, true)
	o, ok, err := j.Outcome(ctx, "counter/1", "msg-0")
	if err != nil || !ok || o.Seq != 3 {
		t.Fatalf("Outcome after reopen = %+v, %v, %v; want seq 3", o, ok, err)
	}
	// Sequence and fencing checks hold across the reopen.
	wantSequenceError(t, j.Append(ctx, batch("p1", e, run("counter/1", 6, 6))), "rewriting seq 6 after reopen")
	wantFenced(t, j.Append(ctx, batch("p1", e-1, run("counter/1", 7, 7))), []string{"p1"})
	mustAppend(t, ctx, j, batch("p1", e, run("counter/1", 7, 7)))
}

// testHorizon checks the partition horizon: none at first, set by a
// batch's Horizon (with entries or alone), left by a batch without one,
// and written or refused with its batch.
func (s *suite) testHorizon(t *testing.T) {
	j, ctx := s.setup(t)
	wantHorizon(t, ctx, j, "p0", 0, false)
	e := acquire(t, ctx, j, "p0")
	at := func(h int64, b journal.Batch) journal.Batch { b.Horizon = h; return b }

	mustAppend(t, ctx, j, at(4096, batch("p0", e, run("counter/1", 1, 2))))
	wantHorizon(t, ctx, j, "p0", 4096, true)
	wantHorizon(t, ctx, j, "p1", 0, false)
	mustAppend(t, ctx, j, batch("p0", e, run("counter/1", 3, 3)))
	wantHorizon(t, ctx, j, "p0", 4096, true)
	mustAppend(t, ctx, j, at(100, batch("p0", e, nil)))
	wantHorizon(t, ctx, j, "p0", 100, true)
	mustAppend(t, ctx, j, at(8192, batch("p0", e, nil)), at(7, batch("p1", 0, nil)))
	wantHorizon(t, ctx, j, "p0", 8192, true)
	wantHorizon(t, ctx, j, "p1", 7, true)
	// Horizons of offsets past 2^53 (Redis stream IDs) are kept exactly.
	mustAppend(t, ctx, j, at(1<<62+1, batch("p1", 0, nil)))
	wantHorizon(t, ctx, j, "p1", 1<<62+1, true)

	// A refused batch moves nothing: fenced, out of sequence, invalid.
	wantFenced(t, j.Append(ctx, at(1<<20, batch("p0", e-1, nil))), []string{"p0"})
	wantSequenceError(t, j.Append(ctx, at(1<<20, batch("p0", e, run("counter/1", 5, 5)))), "a horizon with a gap")
	// The rest of a call is all or nothing too: p1's horizon stays.
	wantSequenceError(t, j.Append(ctx, at(3, batch("p1", 0, nil)), at(1<<20, batch("p0", e, run("counter/1", 5, 5)))), "two horizons and a gap")
	wantHorizon(t, ctx, j, "p1", 1<<62+1, true)
	wantInvalid(t, j.Append(ctx, at(-1, batch("p0", e, nil))), "a negative horizon")
	wantHorizon(t, ctx, j, "p0", 8192, true)
}

func wantHorizon(t *testing.T, ctx context.Context, j journal.Journal, p string, want int64, wantOK bool) {
	t.Helper()
	h, ok, err := j.Horizon(ctx, p)
	if err != nil || h != want || ok != wantOK {
		t.Fatalf("Horizon(%q) = %d, %v, %v; want %d, %v", p, h, ok, err, want, wantOK)
	}
}

func (s *suite) testClose(t *testing.T) {
	j, ctx := s.setup(t)
	mustAppend(t, ctx, j, batch("p0", 0, run("counter/1", 1, 1)))
	if err := j.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	check := func(what string, err error) {
		t.Helper()
		if !errors.Is(err, journal.ErrClosed) {
			t.Errorf("%s after Close: err = %v, want ErrClosed", what, err)
		}
	}
	check("Append", j.Append(ctx, batch("p0", 0, run("counter/1", 2, 2))))
	check("Read", j.Read(ctx, "counter/1", 1, func(journal.Entry) error { return nil }))
	_, err := j.LastSeq(ctx, "counter/1")
	check("LastSeq", err)
	_, _, err = j.Outcome(ctx, "counter/1", "m")
	check("Outcome", err)
	_, _, err = j.LoadCheckpoint(ctx, "counter/1", journal.MaxSeq)
	check("LoadCheckpoint", err)
	_, err = j.Epoch(ctx, "p0")
	check("Epoch", err)
	_, err = j.CompareAndSetEpoch(ctx, "p0", 0, 1)
	check("CompareAndSetEpoch", err)
	_, _, err = j.Horizon(ctx, "p0")
	check("Horizon", err)
	if err := j.Close(); err != nil && !errors.Is(err, journal.ErrClosed) {
		t.Errorf("second Close: %v, want nil or ErrClosed", err)
	}
}

func (s *suite) testCanceledContext(t *testing.T) {
	j, ctx := s.setup(t)
	canceled, cancel := context.WithCancel(ctx)
	cancel()
	err := j.Append(canceled, batch("p0", 0, run("counter/1", 1, 2)))
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Append with a canceled context: err = %v, want context.Canceled", err)
	}
	wantLastSeq(t, ctx, j, "counter/1", 0)
}
