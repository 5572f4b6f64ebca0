package actorhost_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/postbox-dev/postbox/actorhost"
	"github.com/postbox-dev/postbox/channel"
	chsqlite "github.com/postbox-dev/postbox/channel/sqlite"
	"github.com/postbox-dev/postbox/internal/waitfor"
	"github.com/postbox-dev/postbox/internal/workload"
	"github.com/postbox-dev/postbox/journal"
)

func TestCounterWorkloadExactlyOnce(t *testing.T) {
	t.Parallel()
	b := setup(t)
	spec := workload.Spec{Actors: 20, Count: 600, Seed: 3, PoisonEvery: 97, FailEvery: 13}
	var msgs []channel.Message
	exp, _ := spec.Generate(func(m channel.Message) error { msgs = append(msgs, m); return nil })
	b.publish(msgs...)
	h := b.start(b.config())

	waitfor.Until(t, 30*time.Second, "every message handled", func() bool {
		st := h.Stats()
		return st.Processed == int64(exp.Valid) && st.DeadLettered == int64(exp.Poison)
	})
	for addr, want := range exp.States {
		if got := b.state(addr); got != want {
			t.Errorf("%s = %+v, want %+v", addr, got, want)
		}
	}
	keys := b.sink.keys()
	if len(keys) != exp.Valid {
		t.Errorf("%d distinct effect keys, want %d", len(keys), exp.Valid)
	}
	for k, n := range keys {
		if n != 1 {
			t.Errorf("effect %s ran %d times", k, n)
		}
	}
	if got := b.deadLetters(); got != exp.Poison {
		t.Errorf("%d dead letters, want %d", got, exp.Poison)
	}
	if st := h.Stats(); st.Retried != int64(spec.Count/spec.FailEvery) {
		t.Errorf("retried %d, want %d (one per failing message)", st.Retried, spec.Count/spec.FailEvery)
	}
}

func TestPermanentErrorDeadLettersAtOnceWithProvenance(t *testing.T) {
	t.Parallel()
	b := setup(t)
	a, _ := channel.ParseAddress("counter/p")
	b.publish(channel.Message{ID: "poison-1", Address: a, Payload: []byte(`not json`), Headers: map[string]string{"trace": "abc"}})
	h := b.start(b.config())
	waitfor.Until(t, 10*time.Second, "dead letter", func() bool { return h.Stats().DeadLettered == 1 })

	envs, err := b.mb.DLQ().List(context.Background())
	if err != nil || len(envs) != 1 {
		t.Fatalf("dlq = %v, %v", envs, err)
	}
	e := envs[0]
	if e.MessageID != "poison-1" || e.Address != "counter/p" || string(e.Payload) != "not json" || e.Headers["trace"] != "abc" {
		t.Errorf("envelope lost the message: %+v", e)
	}
	if e.Attempts != 1 || e.Reason != "permanent error" || len(e.Errors) != 1 || !strings.Contains(e.LastError(), "not {\"add\"") {
		t.Errorf("envelope attempts/reason/errors = %d %q %+v", e.Attempts, e.Reason, e.Errors)
	}
	wantPart := channel.HomePartition("counter/p", 4)
	if e.Source.Backend != "sqlite" || e.Source.Partition != wantPart || e.Source.Offset <= 0 || e.Worker == "" || e.DeadLetteredAt.IsZero() {
		t.Errorf("provenance incomplete: %+v worker=%q", e.Source, e.Worker)
	}
	if got := b.sink.snapshot(); len(got) != 0 {
		t.Errorf("poison message made side effects: %v", got)
	}
}

func TestRetriesUntilMaxAttemptsThenDeadLetters(t *testing.T) {
	t.Parallel()
	b := setup(t)
	a, _ := channel.ParseAddress("counter/h")
	b.publish(channel.Message{ID: "hopeless", Address: a, Payload: []byte(`{"add":5,"failTimes":100}`)}, add("counter/h", "after", 1))
	h := b.start(b.config())
	waitfor.Until(t, 10*time.Second, "dead letter and the next message", func() bool {
		st := h.Stats()
		return st.DeadLettered == 1 && st.Processed == 1
	})
	envs, _ := b.mb.DLQ().List(context.Background())
	e := envs[0]
	if e.Attempts != 3 || e.Reason != "attempts exhausted" || len(e.Errors) != 3 {
		t.Fatalf("envelope: attempts=%d reason=%q errors=%+v", e.Attempts, e.Reason, e.Errors)
	}
	for i, ae := range e.Errors {
		if ae.Attempt != i+1 || ae.At.IsZero() || !strings.Contains(ae.Error, "on request") {
			t.Errorf("error %d = %+v", i, ae)
		}
	}
	// The failed attempts' state changes were rolled back; the later message
	// of the same actor was applied after the dead letter, in order.
	b.wantState("counter/h", 1, 1)
	// The effect ran once, on attempt 1, and was answered from the journal on
	// attempts 2 and 3: one key, stable across attempts.
	if keys := b.sink.keys(); keys[actorhost.EffectKey("hopeless", 0)] != 1 {
		t.Errorf("effect keys %v: want hopeless#0 exactly once", keys)
	}
	if st := h.Stats(); st.EffectsAnswered < 2 {
		t.Errorf("effects answered from journal = %d, want >= 2", st.EffectsAnswered)
	}
}

// flaky is an actor type whose handler changes state and then fails or
// panics, to prove failed attempts are rolled back.
type flakyState struct {
	Seen []string `json:"seen"`
}

func registerFlaky(t *testing.T, reg *actorhost.Registry, calls *atomic.Int64) {
	err := actorhost.Register(reg, "flaky", func(ctx *actorhost.Context, s *flakyState, m actorhost.Message) error {
		calls.Add(1)
		s.Seen = append(s.Seen, string(m.Payload))
		switch {
		case string(m.Payload) == "panic" && ctx.Attempt() == 1:
			panic("boom")
		case string(m.Payload) == "fail" && ctx.Attempt() < 3:
			return errors.New("not yet")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestPanicsAndFailuresRollBackState(t *testing.T) {
	t.Parallel()
	b := setup(t)
	var calls atomic.Int64
	registerFlaky(t, b.reg, &calls)
	a := channel.Address{Type: "flaky", ID: "1"}
	for i, p := range []string{"a", "panic", "b", "fail", "c"} {
		b.publish(channel.Message{ID: fmt.Sprint("f", i), Address: a, Payload: []byte(p)})
	}
	h := b.start(b.config())
	waitfor.Until(t, 10*time.Second, "all five", func() bool { return h.Stats().Processed == 5 })
	r, err := b.reg.Replay(context.Background(), b.j, a, actorhost.ReplayOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(r.State), `{"seen":["a","panic","b","fail","c"]}`; got != want {
		t.Errorf("state = %s, want %s", got, want)
	}
	if calls.Load() < 8 {
		t.Errorf("handler ran %d times; the panic and the failures should have been retried", calls.Load())
	}
}

func TestRedeliveredCompletedMessageIsAckedWithoutRunning(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.publish(add("counter/d", "once", 7))
	h := b.start(b.config())
	waitfor.Until(t, 10*time.Second, "first delivery", func() bool { return h.Stats().Processed == 1 })
	// The same message again (a producer retry, or a redelivery).
	b.publish(add("counter/d", "once", 7), add("counter/d", "twice", 1))
	waitfor.Until(t, 10*time.Second, "dedup and next", func() bool {
		st := h.Stats()
		return st.Deduplicated == 1 && st.Processed == 2
	})
	b.wantState("counter/d", 8, 2)
	if n := len(b.sink.snapshot()); n != 2 {
		t.Errorf("%d side effects, want 2", n)
	}
}

// A duplicate is caught wherever its outcome lives: in memory since the
// last checkpoint, in the journal before it, and after a restart in an
// actor rebuilt from seq 1 (no checkpoint) or from a checkpoint.
func TestDuplicatesAreCaughtBeforeAndAfterCheckpointsAndRestarts(t *testing.T) {
	t.Parallel()
	b := setup(t)
	cfg := b.config()
	cfg.CheckpointEvery = 3
	// counter/fresh never reaches a checkpoint; counter/old passes two.
	b.publish(add("counter/fresh", "f1", 1), add("counter/fresh", "f2", 1))
	for i := 1; i <= 7; i++ {
		b.publish(add("counter/old", fmt.Sprintf("o%d", i), 1))
	}
	h := b.start(cfg)
	waitfor.Until(t, 10*time.Second, "first run", func() bool { return h.Stats().Processed == 9 })

	// Before the newest checkpoint (journal lookup) and after it (memory).
	b.publish(add("counter/old", "o1", 1), add("counter/old", "o7", 1), add("counter/fresh", "f1", 1))
	waitfor.Until(t, 10*time.Second, "duplicates acked", func() bool { return h.Stats().Deduplicated == 3 })
	stopHost(t, h)

	// A new host rebuilds both actors: fresh from seq 1, old from its
	// checkpoint at seq 6.
	cfg.Consumer = b.mb.Consumer(chsqlite.ConsumerOptions{PollInterval: 2 * time.Millisecond})
	h2 := b.start(cfg)
	b.publish(add("counter/fresh", "f2", 1), add("counter/old", "o2", 1), add("counter/old", "o7", 1), add("counter/fresh", "f3", 1))
	waitfor.Until(t, 10*time.Second, "second run", func() bool {
		st := h2.Stats()
		return st.Deduplicated == 3 && st.Processed == 1
	})
	b.wantState("counter/fresh", 3, 3)
	b.wantState("counter/old", 7, 7)
	if n := len(b.sink.snapshot()); n != 10 {
		t.Errorf("%d side effects, want 10 (one per distinct message)", n)
	}
}

func TestOrderPerActorUnderConcurrency(t *testing.T) {
	t.Parallel()
	b := setup(t)
	type seqState struct{ Last, Count int }
	var violations atomic.Int64
	err := actorhost.Register(b.reg, "seq", func(ctx *actorhost.Context, s *seqState, m actorhost.Message) error {
		var n int
		fmt.Sscan(string(m.Payload), &n)
		if n != s.Last+1 {
			violations.Add(1)
		}
		s.Last = n
		s.Count++
		time.Sleep(100 * time.Microsecond) // widen the window for reordering
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	const actors, per = 40, 30
	var msgs []channel.Message
	for i := 1; i <= per; i++ {
		for a := range actors {
			msgs = append(msgs, channel.Message{Address: channel.Address{Type: "seq", ID: fmt.Sprint(a)}, Payload: []byte(fmt.Sprint(i))})
		}
	}
	b.publish(msgs...)
	cfg := b.config()
	cfg.Concurrency = 32
	h := b.start(cfg)
	waitfor.Until(t, 30*time.Second, "all messages", func() bool { return h.Stats().Processed == actors*per })
	if v := violations.Load(); v != 0 {
		t.Fatalf("%d messages ran out of order", v)
	}
}

func TestPassivatedActorsComeBackWithState(t *testing.T) {
	t.Parallel()
	b := setup(t)
	cfg := b.config()
	cfg.MaxActors = 5
	cfg.IdleTimeout = 50 * time.Millisecond
	h := b.start(cfg)
	const actors = 20
	for round := 1; round <= 2; round++ {
		var msgs []channel.Message
		for a := range actors {
			msgs = append(msgs, add(fmt.Sprintf("counter/%d", a), fmt.Sprintf("r%d-%d", round, a), int64(round)))
		}
		b.publish(msgs...)
		waitfor.Until(t, 10*time.Second, "round handled", func() bool { return h.Stats().Processed == int64(round*actors) })
		waitfor.Until(t, 10*time.Second, "actors passivated", func() bool { return h.Stats().ActiveActors <= 5 })
	}
	for a := range actors {
		b.wantState(fmt.Sprintf("counter/%d", a), 3, 2)
	}
	if st := h.Stats(); st.Activations < 2*actors-5 {
		t.Errorf("%d activations: actors were not passivated and reactivated", st.Activations)
	}
}

func TestFencedHostAcksNothingAndLosesNothing(t *testing.T) {
	t.Parallel()
	b := setup(t)
	cfg := b.config()
	h := b.start(cfg)
	b.publish(add("counter/f", "f1", 1))
	waitfor.Until(t, 10*time.Second, "first", func() bool { return h.Stats().Processed == 1 })

	// Another owner takes the partition's epoch: this host is now a zombie.
	part := fmt.Sprintf("%s/%d", cfg.Consumer.Mailbox(), channel.HomePartition("counter/f", 4))
	if _, err := journal.AcquireEpoch(context.Background(), b.j, part); err != nil {
		t.Fatal(err)
	}
	b.publish(add("counter/f", "f2", 10))
	waitfor.Until(t, 10*time.Second, "fencing", func() bool { return h.Stats().Fenced >= 1 })
	if got := b.state("counter/f"); got.Applied != 1 {
		t.Fatalf("zombie wrote to the journal: %+v", got)
	}
	// The partition comes back to a live owner: f2 is processed exactly once.
	waitfor.Until(t, 20*time.Second, "f2 after reclaim", func() bool { return b.state("counter/f").Applied == 2 })
	b.wantState("counter/f", 11, 2)
}

func TestStopDuringBackoffKeepsTheBackoff(t *testing.T) {
	t.Parallel()
	b := setup(t)
	cfg := b.config()
	cfg.BackoffInitial, cfg.BackoffMax = 3*time.Second, 3*time.Second
	h1, err := actorhost.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	h1.Start(context.Background())
	a, _ := channel.ParseAddress("counter/s")
	b.publish(channel.Message{ID: "slow", Address: a, Payload: []byte(`{"add":2,"failTimes":1}`)})
	waitfor.Until(t, 10*time.Second, "first failure", func() bool { return h1.Stats().Retried == 1 })
	failed := time.Now()
	stopHost(t, h1)
	if d := time.Since(failed); d > time.Second {
		t.Errorf("stop waited %s for a retry backoff instead of handing the message back", d)
	}
	// The next host, with backoffs of its own of a few milliseconds, waits
	// out the rest of the first one (1.5 to 3s), which the journal holds.
	cfg = b.config()
	h2 := b.start(cfg)
	waitfor.Until(t, 20*time.Second, "processed after restart", func() bool { return h2.Stats().Processed == 1 })
	if d := time.Since(failed); d < 1400*time.Millisecond {
		t.Errorf("retried %s after the failure: the rest of its backoff (at least 1.5s) was lost with the host", d)
	}
	b.wantState("counter/s", 2, 1)
	if keys := b.sink.keys(); len(keys) != 1 || keys["slow#0"] != 1 {
		t.Errorf("effect keys = %v, want slow#0 once", keys)
	}
}

func TestUnknownActorTypeIsDeadLettered(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.publish(channel.Message{ID: "x", Address: channel.Address{Type: "nobody", ID: "1"}, Payload: []byte(`{}`)})
	h := b.start(b.config())
	waitfor.Until(t, 10*time.Second, "dead letter", func() bool { return h.Stats().DeadLettered == 1 })
	envs, _ := b.mb.DLQ().List(context.Background())
	if len(envs) != 1 || envs[0].Reason != "unknown actor type" {
		t.Fatalf("dlq = %+v", envs)
	}
}

func TestConfigErrorsNameTheField(t *testing.T) {
	_, err := actorhost.New(actorhost.Config{Concurrency: -1})
	for _, want := range []string{"Registry is required", "Consumer is required", "Journal is required", "Concurrency is -1"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v does not say %q", err, want)
		}
	}
}

func TestStuckHandlerIsAbandonedAfterDrainTimeout(t *testing.T) {
	t.Parallel()
	b := setup(t)
	release := make(chan struct{})
	var runs atomic.Int64
	err := actorhost.Register(b.reg, "stuck", func(ctx *actorhost.Context, s *struct{ N int }, m actorhost.Message) error {
		if runs.Add(1) == 1 {
			<-release // the first run hangs until the test ends
		}
		s.N++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	defer close(release)
	b.publish(channel.Message{ID: "s1", Address: channel.Address{Type: "stuck", ID: "1"}, Payload: []byte(`{}`)})
	cfg := b.config()
	cfg.DrainTimeout = 100 * time.Millisecond
	h1, err := actorhost.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	h1.Start(context.Background())
	waitfor.Until(t, 10*time.Second, "handler running", func() bool { return runs.Load() == 1 })
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := h1.Stop(ctx); err != nil {
		t.Fatalf("stop: %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("stop took %s despite a 100ms drain timeout", d)
	}
	h2 := b.start(b.config())
	waitfor.Until(t, 20*time.Second, "redelivered and handled", func() bool { return h2.Stats().Processed == 1 })
}

func TestMaxInFlightBoundsWhatIsTakenFromThePartition(t *testing.T) {
	t.Parallel()
	b := setup(t)
	err := actorhost.Register(b.reg, "slow", func(ctx *actorhost.Context, s *struct{ N int }, m actorhost.Message) error {
		time.Sleep(time.Millisecond)
		s.N++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var msgs []channel.Message
	for i := range 150 {
		msgs = append(msgs, channel.Message{Address: channel.Address{Type: "slow", ID: fmt.Sprint(i % 3)}, Payload: []byte(`{}`)})
	}
	b.publish(msgs...)
	cfg := b.config()
	cfg.MaxInFlight = 8
	h := b.start(cfg)
	peak := int64(0)
	waitfor.Until(t, 30*time.Second, "all handled", func() bool {
		st := h.Stats()
		peak = max(peak, st.InFlight)
		return st.Processed == 150
	})
	if peak > 8*4 { // four partitions, at most 8 each
		t.Fatalf("peak in flight %d, want at most 32", peak)
	}
	if peak == 0 {
		t.Fatal("never saw a message in flight")
	}
}

// A Stop while another is under way returns when its own ctx ends, not
// when the first one's does, and a later one gets the first's result.
func TestStopWhileStoppingHonoursItsOwnContext(t *testing.T) {
	t.Parallel()
	b := setup(t)
	release := make(chan struct{})
	var runs atomic.Int64
	err := actorhost.Register(b.reg, "slow", func(ctx *actorhost.Context, s *struct{ N int }, m actorhost.Message) error {
		if runs.Add(1) == 1 {
			<-release
		}
		s.N++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	b.publish(channel.Message{ID: "s1", Address: channel.Address{Type: "slow", ID: "1"}, Payload: []byte(`{}`)})
	cfg := b.config()
	cfg.DrainTimeout = time.Minute
	h, err := actorhost.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	h.Start(context.Background())
	waitfor.Until(t, 10*time.Second, "handler running", func() bool { return runs.Load() == 1 })
	first := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		first <- h.Stop(ctx)
	}()
	time.Sleep(50 * time.Millisecond) // let the first Stop begin
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	if err := h.Stop(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("second Stop: %v, want its own deadline", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("second Stop took %s with a 100ms deadline", d)
	}
	close(release)
	if err := <-first; err != nil {
		t.Errorf("first Stop: %v", err)
	}
	if err := h.Stop(context.Background()); err != nil {
		t.Errorf("Stop after Stop: %v, want the first's nil", err)
	}
}

func TestClaimsListHeldPartitionsWithTheirJournalEpochs(t *testing.T) {
	t.Parallel()
	b := setup(t)
	cfg := b.config()
	h := b.start(cfg)
	waitfor.Until(t, 10*time.Second, "all 4 partitions claimed", func() bool { return len(h.Claims()) == 4 })
	for i, c := range h.Claims() {
		if c.Partition != int32(i) || c.Epoch < 1 || c.Since.IsZero() || c.Stopping {
			t.Fatalf("claim %d = %+v, want partition %d with an epoch and a start", i, c, i)
		}
	}

	// A newer owner takes one partition's epoch: from when the host meets
	// the fence, it lists the partition only under an epoch above the
	// newer owner's, once it has claimed it again. (The fenced claim
	// itself ends within milliseconds, too soon for this poll to see it.)
	p := channel.HomePartition("counter/c", 4)
	newer, err := journal.AcquireEpoch(context.Background(), b.j, fmt.Sprintf("%s/%d", cfg.Consumer.Mailbox(), p))
	if err != nil {
		t.Fatal(err)
	}
	b.publish(add("counter/c", "c1", 1))
	waitfor.Until(t, 10*time.Second, "the fence", func() bool { return h.Stats().Fenced >= 1 })
	waitfor.Until(t, 20*time.Second, "the partition claimed again", func() bool {
		for _, c := range h.Claims() {
			if c.Partition == p {
				if c.Epoch <= newer {
					t.Fatalf("partition %d listed under epoch %d after epoch %d fenced it", p, c.Epoch, newer)
				}
				return true
			}
		}
		return false
	})
	stopHost(t, h)
	if got := h.Claims(); len(got) != 0 {
		t.Errorf("a stopped host lists claims: %+v", got)
	}
}
