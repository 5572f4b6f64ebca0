package actorhost_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/postbox-dev/postbox/actorhost"
	"github.com/postbox-dev/postbox/channel"
	"github.com/postbox-dev/postbox/channel/memory"
	"github.com/postbox-dev/postbox/internal/waitfor"
	"github.com/postbox-dev/postbox/journal"
	jmemory "github.com/postbox-dev/postbox/journal/memory"
)

// TestHorizonPremarksWhatMayHaveRun: a message that may have run before
// is pre-marked (its attempt journaled before its handler runs again) and
// a first delivery is not, told by the journal's partition horizon alone:
// the mailbox counts nothing. After a clean stop nothing is pre-marked;
// after a crash, what was in flight and what lies below the horizon the
// crashed owner had set ahead.
func TestHorizonPremarksWhatMayHaveRun(t *testing.T) {
	t.Parallel()
	mb := memory.New(memory.Options{Name: "hz", Partitions: 1})
	defer mb.Close()
	j := jmemory.New(jmemory.Options{})
	defer j.Close()
	release := make(chan struct{})
	blocked := make(chan struct{}, 1)
	var held atomic.Bool
	reg := actorhost.NewRegistry()
	err := actorhost.Register(reg, "probe", func(ctx *actorhost.Context, s *struct{ N int }, m actorhost.Message) error {
		if string(m.Payload) == "hold" && !held.Swap(true) { // the first run blocks
			blocked <- struct{}{}
			<-release
		}
		s.N++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	host := func(c channel.Consumer) *actorhost.Host {
		h, err := actorhost.New(actorhost.Config{Registry: reg, Journal: j, DeadLetters: mb.DLQ(), Consumer: c})
		if err != nil {
			t.Fatal(err)
		}
		if err := h.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		return h
	}
	addr := channel.Address{Type: "probe", ID: "1"}
	publish := func(id string) {
		t.Helper()
		if err := mb.Publisher().Publish(context.Background(), channel.Message{ID: id, Address: addr, Payload: []byte(id)}); err != nil {
			t.Fatal(err)
		}
	}
	processed := func(h *actorhost.Host, n int64) {
		t.Helper()
		waitfor.Until(t, 10*time.Second, fmt.Sprintf("%d messages processed", n), func() bool { return h.Stats().Processed == n })
	}
	horizon := func() int64 {
		t.Helper()
		h, ok, err := j.Horizon(context.Background(), mb.Consumer().Mailbox()+"/0")
		if err != nil || !ok {
			t.Fatalf("Horizon: %d, %v, %v", h, ok, err)
		}
		return h
	}

	// A takes "first" (offset 1) and stops cleanly: the horizon is
	// set just past it, so B's "second" counts as a first delivery.
	a := host(mb.Consumer())
	publish("first")
	processed(a, 1)
	stopHost(t, a)
	if h := horizon(); h != 2 {
		t.Errorf("horizon after a clean stop past offset 1 = %d, want 2", h)
	}
	cb := mb.Consumer()
	b := host(cb)
	publish("second")
	processed(b, 1)

	// B crashes while "hold" runs. C gets it again, and "after",
	// published since: both below the horizon B had set ahead.
	publish("hold")
	<-blocked
	cb.Crash()
	publish("after")
	c := host(mb.Consumer())
	processed(c, 2)
	close(release) // B's late write is fenced by C's epoch
	stopHost(t, b)
	stopHost(t, c)
	if h := horizon(); h <= 5 {
		t.Errorf("horizon after the crash and a clean stop past offset 4 = %d, want the crashed owner's, further ahead", h)
	}

	premarked := map[string]bool{}
	var order []string
	err = j.Read(context.Background(), "probe/1", 1, func(e journal.Entry) error {
		order = append(order, e.Kind.String()+" "+e.MsgID)
		if e.Kind == journal.KindAttempt {
			premarked[e.MsgID] = true
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for id, want := range map[string]bool{"first": false, "second": false, "hold": true, "after": true} {
		if premarked[id] != want {
			t.Errorf("%s pre-marked: %v, want %v (journal: %v)", id, premarked[id], want, order)
		}
	}
}
