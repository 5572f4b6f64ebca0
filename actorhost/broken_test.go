package actorhost_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/postbox-dev/postbox/channel"
	"github.com/postbox-dev/postbox/internal/waitfor"
	"github.com/postbox-dev/postbox/journal"
)

// An actor whose journal no longer replays (here a checkpoint that does not
// decode) fails the same way on every activation. Its messages are
// dead-lettered with the reason, once each, while the other actors of the
// partition go on; the gauge and the log name the actor and the cause.
func TestBrokenActorDeadLettersItsMessagesAndSaysWhy(t *testing.T) {
	t.Parallel()
	b := setup(t)
	broken := channel.Address{Type: "counter", ID: "broken"}
	// All on one partition, so a stuck actor would hold the others up.
	part := channel.HomePartition(broken.String(), b.mb.Partitions())
	var healthy []channel.Address
	for i := 0; len(healthy) < 3; i++ {
		a := channel.Address{Type: "counter", ID: fmt.Sprint("ok", i)}
		if channel.HomePartition(a.String(), b.mb.Partitions()) == part {
			healthy = append(healthy, a)
		}
	}
	ctx := context.Background()
	err := b.j.Append(ctx, journal.Batch{
		Partition:   fmt.Sprintf("%s/%d", b.mb.Identity(), part),
		Entries:     []journal.Entry{{Actor: broken.String(), Seq: 1, Kind: journal.KindAttempt, MsgID: "old", Data: []byte{0xff}}},
		Checkpoints: []journal.Checkpoint{{Actor: broken.String(), Seq: 1, State: []byte("not json")}},
	})
	if err != nil {
		t.Fatal(err)
	}
	var msgs []channel.Message
	for i := range 4 {
		msgs = append(msgs, channel.Message{ID: fmt.Sprint("b", i), Address: broken, Payload: []byte(`{"add":1}`)})
		for _, a := range healthy {
			msgs = append(msgs, channel.Message{ID: fmt.Sprint(a.ID, "-", i), Address: a, Payload: []byte(`{"add":2}`)})
		}
	}
	b.publish(msgs...)

	core, logs := observer.New(zap.ErrorLevel)
	cfg := b.config()
	cfg.Logger = zap.New(core)
	h := b.start(cfg)
	waitfor.Until(t, 20*time.Second, "every message handled or dead-lettered", func() bool {
		s := h.Stats()
		return s.Processed == int64(4*len(healthy)) && s.DeadLettered == 4
	})
	for _, a := range healthy {
		b.wantState(a.String(), 8, 4)
	}
	envs, err := b.mb.DLQ().List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(envs) != 4 {
		t.Fatalf("%d dead letters, want the broken actor's 4: %+v", len(envs), envs)
	}
	for _, e := range envs {
		last := ""
		if len(e.Errors) > 0 {
			last = e.Errors[len(e.Errors)-1].Error
		}
		if e.Address != broken.String() || e.Reason != "actor cannot be activated" || !strings.Contains(last, "checkpoint at seq 1 does not decode") {
			t.Errorf("dead letter %s of %s: reason %q, last error %q; want the broken actor's, with why", e.MessageID, e.Address, e.Reason, last)
		}
	}
	if n := h.Stats().BrokenActors; n != 1 {
		t.Errorf("Stats().BrokenActors = %d, want 1", n)
	}
	said := false
	for _, e := range logs.All() {
		fields := e.ContextMap()
		if fields["actor"] == broken.String() && strings.Contains(fmt.Sprint(fields["error"]), "does not decode") {
			said = true
		}
	}
	if !said {
		t.Errorf("no error log names %s and why; logs: %v", broken, logs.All())
	}
}
