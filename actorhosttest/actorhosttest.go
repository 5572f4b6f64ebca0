// Package actorhosttest runs actor handlers in tests: a real
// actorhost.Host on an in-memory mailbox and journal, with helpers to send
// messages, wait until they are settled, and look at what came of them
// (state, side effects with their idempotency keys, outcomes, dead
// letters). VerifyReplay replays an actor's journal through its handler
// and fails the test on any divergence, so nondeterminism in a handler is
// caught in the program's own CI.
//
//	k := actorhosttest.New(t, reg, actorhosttest.Options{})
//	k.Send(actorhosttest.Msg("order/1", "m1", `{"amount":1250}`))
//	k.Settle()
//	var o Order
//	k.State("order/1", &o)
//	k.VerifyReplay("order/1")
package actorhosttest

import (
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/postbox-dev/postbox/actorhost"
	"github.com/postbox-dev/postbox/channel"
	"github.com/postbox-dev/postbox/channel/memory"
	"github.com/postbox-dev/postbox/dlq"
	"github.com/postbox-dev/postbox/internal/entry"
	"github.com/postbox-dev/postbox/journal"
	jmemory "github.com/postbox-dev/postbox/journal/memory"
)

// Options tune the Kit. The zero value is ready to use.
type Options struct {
	// Partitions of the mailbox. Defaults to 4.
	Partitions int
	// MaxAttempts, CheckpointEvery and Concurrency are the host's; they
	// default to 3, 5 and 8. Retries wait 1ms, then 2ms, up to 10ms.
	MaxAttempts, CheckpointEvery, Concurrency int
	// Config, when set, adjusts the host's configuration last.
	Config func(*actorhost.Config)
	// SettleTimeout bounds Settle. Defaults to 10s.
	SettleTimeout time.Duration
}

// Kit is a host running reg's handlers on an in-memory mailbox and
// journal. It stops when the test ends.
type Kit struct {
	t    testing.TB
	reg  *actorhost.Registry
	mb   *memory.Mailbox
	j    *jmemory.Journal
	host *actorhost.Host
	opts Options
}

// New starts a Kit for reg.
func New(t testing.TB, reg *actorhost.Registry, opts Options) *Kit {
	t.Helper()
	if reg == nil {
		t.Fatal("actorhosttest.New: no registry: pass actorhost.NewRegistry() with your types registered")
	}
	if opts.Partitions == 0 {
		opts.Partitions = 4
	}
	if opts.SettleTimeout == 0 {
		opts.SettleTimeout = 10 * time.Second
	}
	k := &Kit{t: t, reg: reg, opts: opts,
		mb: memory.New(memory.Options{Name: "actorhosttest", Partitions: opts.Partitions}),
		j:  jmemory.New(jmemory.Options{}),
	}
	cfg := actorhost.Config{
		Registry: reg, Consumer: k.mb.Consumer(), Journal: k.j, DeadLetters: k.mb.DLQ(),
		MaxAttempts: or(opts.MaxAttempts, 3), CheckpointEvery: or(opts.CheckpointEvery, 5), Concurrency: or(opts.Concurrency, 8),
		BackoffInitial: time.Millisecond, BackoffMax: 10 * time.Millisecond,
	}
	if opts.Config != nil {
		opts.Config(&cfg)
	}
	h, err := actorhost.New(cfg)
	if err != nil {
		t.Fatalf("actorhosttest.New: %v", err)
	}
	if err := h.Start(context.Background()); err != nil {
		t.Fatalf("actorhosttest.New: %v", err)
	}
	k.host = h
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := h.Stop(ctx); err != nil {
			t.Errorf("actorhosttest: stop the host: %v", err)
		}
		k.mb.Close()
	})
	return k
}

func or(v, def int) int {
	if v == 0 {
		return def
	}
	return v
}

// Msg is a message to actor ("type/id") with ID id and payload; it fails
// the test's Send if actor is not an address.
func Msg(actor, id, payload string) channel.Message {
	a, _ := channel.ParseAddress(actor)
	return channel.Message{ID: id, Address: a, Payload: []byte(payload)}
}

// Send publishes msgs (a message ID sent twice is deduplicated, as in
// production).
func (k *Kit) Send(msgs ...channel.Message) {
	k.t.Helper()
	if err := k.mb.Publisher().Publish(context.Background(), msgs...); err != nil {
		k.t.Fatalf("actorhosttest: send: %v", err)
	}
}

// Settle waits until every message sent has been completed or
// dead-lettered, and acked.
func (k *Kit) Settle() {
	k.t.Helper()
	deadline := time.Now().Add(k.opts.SettleTimeout)
	for k.mb.Pending() > 0 {
		if time.Now().After(deadline) {
			k.t.Fatalf("actorhosttest: %d messages not settled after %s (a handler stuck, or retrying?)", k.mb.Pending(), k.opts.SettleTimeout)
		}
		time.Sleep(time.Millisecond)
	}
}

// State decodes actor's durable state, rebuilt from the journal, into v.
func (k *Kit) State(actor string, v any) {
	k.t.Helper()
	r, err := k.reg.Replay(context.Background(), k.j, k.address(actor), actorhost.ReplayOptions{})
	if err != nil {
		k.t.Fatalf("actorhosttest: state of %s: %v", actor, err)
	}
	if err := json.Unmarshal(r.State, v); err != nil {
		k.t.Fatalf("actorhosttest: state of %s: %v", actor, err)
	}
}

// Effect is a side effect's journaled result.
type Effect struct {
	MessageID string
	Index     int    // its position among its message's effects
	Name      string // as the handler named it
	Key       string // the idempotency key fn got: actorhost.EffectKey(MessageID, Index)
	Result    []byte
}

// Effects returns actor's journaled side effects, in journal order.
func (k *Kit) Effects(actor string) []Effect {
	k.t.Helper()
	var out []Effect
	k.read(actor, func(e journal.Entry) {
		if e.Kind != journal.KindEffect {
			return
		}
		d, err := entry.DecodeEffect(e.Data)
		if err != nil {
			k.t.Fatalf("actorhosttest: effect entry %d of %s: %v", e.Seq, actor, err)
		}
		out = append(out, Effect{MessageID: e.MsgID, Index: d.Index, Name: d.Name, Key: actorhost.EffectKey(e.MsgID, d.Index), Result: d.Result})
	})
	return out
}

// Outcome is what came of a message: "completed", "dead-lettered", or ""
// while it has none.
func (k *Kit) Outcome(actor, msgID string) string {
	k.t.Helper()
	e, ok, err := k.j.Outcome(context.Background(), actor, msgID)
	switch {
	case err != nil:
		k.t.Fatalf("actorhosttest: outcome of %s for %s: %v", msgID, actor, err)
	case !ok:
		return ""
	case e.Kind == journal.KindComplete:
		return "completed"
	}
	return "dead-lettered"
}

// DeadLetters returns the dead-letter queue, oldest first.
func (k *Kit) DeadLetters() []dlq.Envelope {
	k.t.Helper()
	envs, err := k.mb.DLQ().List(context.Background())
	if err != nil {
		k.t.Fatalf("actorhosttest: dead letters: %v", err)
	}
	return envs
}

// Journal is the kit's journal, to read or to hand to VerifyReplay.
func (k *Kit) Journal() journal.Journal { return k.j }

// Host is the kit's host, for its Stats.
func (k *Kit) Host() *actorhost.Host { return k.host }

// VerifyReplay replays actor's journal through its handler; see the
// package function.
func (k *Kit) VerifyReplay(actor string) {
	k.t.Helper()
	VerifyReplay(k.t, k.reg, k.j, actor)
}

func (k *Kit) address(actor string) channel.Address {
	k.t.Helper()
	a, err := channel.ParseAddress(actor)
	if err != nil {
		k.t.Fatalf("actorhosttest: %v", err)
	}
	return a
}

func (k *Kit) read(actor string, fn func(journal.Entry)) {
	k.t.Helper()
	err := k.j.Read(context.Background(), actor, 1, func(e journal.Entry) error { fn(e); return nil })
	if err != nil {
		k.t.Fatalf("actorhosttest: read the journal of %s: %v", actor, err)
	}
}

// VerifyReplay replays actor's journal in j through reg's handler and
// fails t on any divergence: a replay that does not go through (the
// handler now fails a message the journal says completed, or asks for
// other side effects than it did), or a state that differs from a
// checkpoint written at the same point, or from the state rebuilt from the
// newest checkpoint. A handler must be deterministic given its state, its
// message, ctx.Now(), ctx.Rand() and its side effects' results; this finds
// one that is not (it reads the clock, a global, a map's order).
func VerifyReplay(t testing.TB, reg *actorhost.Registry, j journal.Journal, actor string) {
	t.Helper()
	ctx := context.Background()
	a, err := channel.ParseAddress(actor)
	if err != nil {
		t.Fatalf("VerifyReplay: %v", err)
	}
	whole, err := reg.Replay(ctx, j, a, actorhost.ReplayOptions{IgnoreCheckpoints: true})
	if err != nil {
		t.Errorf("VerifyReplay %s: the journal does not replay through the handler: %v", actor, err)
		return
	}
	newest, err := reg.Replay(ctx, j, a, actorhost.ReplayOptions{})
	if err != nil {
		t.Errorf("VerifyReplay %s: replay from the newest checkpoint: %v", actor, err)
		return
	}
	if !sameJSON(whole.State, newest.State) {
		t.Errorf("VerifyReplay %s: replayed from the start the state is %s, from the checkpoint at seq %d it is %s: the handler is not deterministic",
			actor, whole.State, newest.Checkpoint, newest.State)
		return
	}
	// Every checkpoint still kept, against the state replayed up to it.
	for at := journal.MaxSeq; ; {
		cp, ok, err := j.LoadCheckpoint(ctx, actor, at)
		if err != nil {
			t.Errorf("VerifyReplay %s: load checkpoint: %v", actor, err)
			return
		}
		if !ok || cp.Seq <= 0 {
			return
		}
		fromCP, err1 := reg.Replay(ctx, j, a, actorhost.ReplayOptions{Until: cp.Seq})
		upTo, err2 := reg.Replay(ctx, j, a, actorhost.ReplayOptions{Until: cp.Seq, IgnoreCheckpoints: true})
		if err := errors.Join(err1, err2); err != nil {
			t.Errorf("VerifyReplay %s: replay up to the checkpoint at seq %d: %v", actor, cp.Seq, err)
			return
		}
		if !sameJSON(fromCP.State, upTo.State) {
			t.Errorf("VerifyReplay %s: the checkpoint at seq %d holds %s, but replaying the journal up to it gives %s: the handler is not deterministic",
				actor, cp.Seq, fromCP.State, upTo.State)
			return
		}
		at = cp.Seq - 1
	}
}

func sameJSON(a, b []byte) bool {
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return slices.Equal(a, b)
	}
	return reflect.DeepEqual(x, y)
}
