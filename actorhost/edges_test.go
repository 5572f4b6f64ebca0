package actorhost_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/postbox-dev/postbox/channel"
	"github.com/postbox-dev/postbox/internal/waitfor"
	"github.com/postbox-dev/postbox/journal"
)

// Idle timeouts below the janitor's tick granularity work: the tick has a
// floor, and actors are passivated and activated again as often as asked.
func TestTinyIdleTimeoutPassivatesWithoutPanicking(t *testing.T) {
	t.Parallel()
	b := setup(t)
	cfg := b.config()
	cfg.IdleTimeout = time.Nanosecond
	h := b.start(cfg)
	// One at a time, with idle gaps of several ticks between them, so that
	// the janitor gets to run even on a loaded machine.
	for i := range 20 {
		b.publish(add("counter/idle", fmt.Sprint("i", i), 1))
		waitfor.Until(t, 20*time.Second, fmt.Sprintf("message %d processed", i+1), func() bool { return h.Stats().Processed == int64(i+1) })
		time.Sleep(5 * time.Millisecond)
	}
	b.wantState("counter/idle", 20, 20)
	if n := h.Stats().Activations; n < 2 {
		t.Errorf("%d activations, want the actor passivated and activated again", n)
	}
}

// An actor that only ever dead-letters still checkpoints, so its history
// replays from a checkpoint and its memory is bounded.
func TestActorThatOnlyDeadLettersCheckpoints(t *testing.T) {
	t.Parallel()
	b := setup(t)
	a := channel.Address{Type: "counter", ID: "poison"}
	for i := range 12 {
		b.publish(channel.Message{ID: fmt.Sprint("p", i), Address: a, Payload: []byte("not json")})
	}
	h := b.start(b.config()) // checkpoints every 5 outcomes
	waitfor.Until(t, 20*time.Second, "12 dead letters", func() bool { return h.Stats().DeadLettered == 12 })
	stopHost(t, h)
	cp, ok, err := b.j.LoadCheckpoint(context.Background(), a.String(), journal.MaxSeq)
	if err != nil || !ok || cp.Seq == 0 {
		t.Fatalf("newest checkpoint of %s: %+v, found %v, %v; want one after 12 dead letters", a, cp, ok, err)
	}
}

// Messages no handler may run still get a journal outcome, so a redelivery
// or a second publish of one is deduplicated instead of dead-lettered again.
func TestUnhandledMessagesAreJournaledAndDeduplicated(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ghost := channel.Message{ID: "g1", Address: channel.Address{Type: "nobody", ID: "1"}, Payload: []byte(`{}`)}
	b.publish(ghost)
	h := b.start(b.config())
	waitfor.Until(t, 10*time.Second, "a dead letter", func() bool { return h.Stats().DeadLettered == 1 })
	b.publish(ghost)
	waitfor.Until(t, 10*time.Second, "the second publish deduplicated", func() bool { return h.Stats().Deduplicated == 1 })
	if _, ok, err := b.j.Outcome(context.Background(), "nobody/1", "g1"); err != nil || !ok {
		t.Errorf("no journal outcome for the unknown type's message: %v", err)
	}
	if n := b.deadLetters(); n != 1 {
		t.Errorf("%d dead letters, want 1", n)
	}
}
