package actorhost_test

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/postbox-dev/postbox/actorhost"
	"github.com/postbox-dev/postbox/actors/counter"
	"github.com/postbox-dev/postbox/channel"
	chsqlite "github.com/postbox-dev/postbox/channel/sqlite"
	"github.com/postbox-dev/postbox/internal/waitfor"
	"github.com/postbox-dev/postbox/journal"
	"github.com/postbox-dev/postbox/journal/memory"
)

// runOnce runs msgs through a fresh mailbox on journal j until every
// message is handled, and returns the host's stats and the side effects.
func runOnce(t *testing.T, j journal.Journal, msgs []channel.Message) (actorhost.Stats, *memSink, *actorhost.Registry) {
	t.Helper()
	mb, err := chsqlite.Open(filepath.Join(t.TempDir(), "m.db"), chsqlite.Options{Partitions: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer mb.Close()
	if err := mb.Publisher().Publish(context.Background(), msgs...); err != nil {
		t.Fatal(err)
	}
	sink := &memSink{}
	reg := actorhost.NewRegistry()
	counter.Register(reg, sink)
	h, err := actorhost.New(actorhost.Config{
		Registry: reg, Journal: j, DeadLetters: mb.DLQ(),
		Consumer:       mb.Consumer(chsqlite.ConsumerOptions{PollInterval: time.Millisecond}),
		BackoffInitial: time.Millisecond, BackoffMax: time.Millisecond,
		CheckpointEvery: 4, Concurrency: 4,
	})
	if err != nil {
		t.Fatal(err)
	}
	h.Start(context.Background())
	waitfor.Until(t, 20*time.Second, "all messages handled", func() bool {
		st := h.Stats()
		return st.Processed+st.Deduplicated == int64(len(msgs))
	})
	stopHost(t, h)
	return h.Stats(), sink, reg
}

// A crash can leave the journal cut after any entry, with every message
// delivered again. Whatever the cut, the final state must equal the state
// with no crash, side effects already journaled must be answered rather than
// run, and every effect keeps its idempotency key.
func TestCrashAtEveryJournalPointReplaysToSameState(t *testing.T) {
	t.Parallel()
	addr := channel.Address{Type: counter.Type, ID: "r"}
	var msgs []channel.Message
	for i := range 12 {
		n := int64(i*3 - 7)
		fail := 0
		if i%5 == 2 {
			fail = 1 // effect journaled on attempt 1, reused on attempt 2
		}
		p := fmt.Sprintf(`{"add":%d,"failTimes":%d}`, n, fail)
		msgs = append(msgs, channel.Message{ID: fmt.Sprint("m", i), Address: addr, Payload: []byte(p)})
	}

	ref := memory.New(memory.Options{})
	_, refSink, reg := runOnce(t, ref, msgs)
	want, err := reg.Replay(context.Background(), ref, addr, actorhost.ReplayOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var entries []journal.Entry
	ref.Read(context.Background(), addr.String(), 1, func(e journal.Entry) error { entries = append(entries, e); return nil })
	refKeys := refSink.keys()
	if len(refKeys) != len(msgs) {
		t.Fatalf("reference run made %d distinct effects, want %d", len(refKeys), len(msgs))
	}

	for cut := 0; cut <= len(entries); cut++ {
		t.Run(fmt.Sprint("cut=", cut), func(t *testing.T) {
			t.Parallel()
			j := memory.New(memory.Options{})
			b := journal.Batch{Partition: "before-crash", Entries: entries[:cut]}
			if cp, ok, _ := ref.LoadCheckpoint(context.Background(), addr.String(), int64(cut)); ok {
				b.Checkpoints = []journal.Checkpoint{cp}
			}
			if err := j.Append(context.Background(), b); err != nil {
				t.Fatal(err)
			}
			journaled := map[string]bool{} // messages whose effect survived the crash
			for _, e := range entries[:cut] {
				if e.Kind == journal.KindEffect {
					journaled[e.MsgID] = true
				}
			}
			st, sink, reg := runOnce(t, j, msgs)
			got, err := reg.Replay(context.Background(), j, addr, actorhost.ReplayOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if string(got.State) != string(want.State) {
				t.Fatalf("state after crash at %d = %s, want %s", cut, got.State, want.State)
			}
			for _, l := range sink.snapshot() {
				if refKeys[l.Key] != 1 {
					t.Errorf("effect key %s not in the reference run", l.Key)
				}
				if id := l.Key[:len(l.Key)-2]; journaled[id] {
					t.Errorf("effect of %s ran again though its result was journaled", id)
				}
			}
			if ran := len(sink.snapshot()); ran != len(msgs)-len(journaled) {
				t.Errorf("%d effects ran, want %d (the ones not journaled before the crash)", ran, len(msgs)-len(journaled))
			}
			_ = st
		})
	}
}

func TestReplayUntilAndWithoutCheckpointsAgree(t *testing.T) {
	t.Parallel()
	addr := channel.Address{Type: counter.Type, ID: "u"}
	var msgs []channel.Message
	for i := range 30 {
		msgs = append(msgs, add("counter/u", fmt.Sprint("u", i), int64(i)))
	}
	j := memory.New(memory.Options{})
	_, _, reg := runOnce(t, j, msgs)
	ctx := context.Background()
	withCP, err := reg.Replay(ctx, j, addr, actorhost.ReplayOptions{})
	if err != nil {
		t.Fatal(err)
	}
	full, err := reg.Replay(ctx, j, addr, actorhost.ReplayOptions{IgnoreCheckpoints: true})
	if err != nil {
		t.Fatal(err)
	}
	if string(withCP.State) != string(full.State) || withCP.Checkpoint == 0 || withCP.Messages >= full.Messages {
		t.Fatalf("with checkpoint %+v, full %+v", withCP, full)
	}
	if string(full.State) != `{"value":435,"applied":30}` {
		t.Fatalf("state = %s", full.State)
	}
	// Until a point in the middle: the state after the messages up to it.
	mid, err := reg.Replay(ctx, j, addr, actorhost.ReplayOptions{Until: 20})
	if err != nil {
		t.Fatal(err)
	}
	if mid.Seq != 20 || string(mid.State) != `{"value":45,"applied":10}` {
		t.Fatalf("until 20: seq %d state %s", mid.Seq, mid.State)
	}
}
