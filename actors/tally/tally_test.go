package tally_test

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/postbox-dev/postbox/actorhost"
	"github.com/postbox-dev/postbox/actors/tally"
	"github.com/postbox-dev/postbox/channel"
	chsqlite "github.com/postbox-dev/postbox/channel/sqlite"
	"github.com/postbox-dev/postbox/internal/waitfor"
	"github.com/postbox-dev/postbox/journal"
	"github.com/postbox-dev/postbox/journal/memory"
)

func TestHandler(t *testing.T) {
	t.Parallel()
	h := tally.Handler()
	var s tally.State
	// A zero Context has no journal: a side effect would panic.
	ctx := &actorhost.Context{}
	for _, p := range []string{`{"add":2}`, `{"add":-7}`, `{"add":0,"failTimes":3}`, `{"add":10}`} {
		if err := h(ctx, &s, actorhost.Message{Payload: []byte(p)}); err != nil {
			t.Fatalf("%s: %v", p, err)
		}
	}
	if want := (tally.State{Value: 5, Applied: 4}); s != want {
		t.Errorf("state %+v, want %+v", s, want)
	}
	b, _ := json.Marshal(s)
	if string(b) != `{"value":5,"applied":4}` {
		t.Errorf("state JSON %s, want {\"value\":5,\"applied\":4}", b)
	}
	for _, p := range []string{``, `not json`, `{}`, `{"add":null}`, `{"add":"1"}`, `{"add":1.5}`, `[1]`} {
		before := s
		err := h(ctx, &s, actorhost.Message{Payload: []byte(p)})
		if !actorhost.IsPermanent(err) || !strings.Contains(err.Error(), `tally: payload`) || !strings.Contains(err.Error(), `is not {"add": <int>}`) {
			t.Errorf("payload %q: error %v, want the permanent tally payload error", p, err)
		}
		if s != before {
			t.Errorf("payload %q changed the state to %+v", p, s)
		}
	}
}

// Through a host that checkpoints every two messages, messages delivered
// again after a checkpoint, and a poison message delivered twice, are
// each handled once, and the tally makes no side effect.
func TestHostAppliesDuplicatesOnce(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	mb, err := chsqlite.Open(filepath.Join(t.TempDir(), "mailbox.db"), chsqlite.Options{Partitions: 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mb.Close() })
	j := memory.New(memory.Options{})
	t.Cleanup(func() { j.Close() })
	reg := actorhost.NewRegistry()
	if err := tally.Register(reg); err != nil {
		t.Fatal(err)
	}
	a := channel.Address{Type: tally.Type, ID: "t"}
	msg := func(id, payload string) channel.Message {
		return channel.Message{ID: id, Address: a, Payload: []byte(payload)}
	}
	publish := func(msgs ...channel.Message) {
		t.Helper()
		if err := mb.Publisher().Publish(ctx, msgs...); err != nil {
			t.Fatal(err)
		}
	}
	var first []channel.Message
	for i := range 9 {
		first = append(first, msg(fmt.Sprint("m", i), fmt.Sprintf(`{"add":%d}`, i+1)))
	}
	first = append(first, msg("poison", `{"add":"x"}`))
	publish(first...)
	h, err := actorhost.New(actorhost.Config{
		Registry: reg, Journal: j, DeadLetters: mb.DLQ(), CheckpointEvery: 2,
		Consumer: mb.Consumer(chsqlite.ConsumerOptions{PollInterval: 2 * time.Millisecond}),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		h.Stop(sctx)
	})
	handled := func() int64 { st := h.Stats(); return st.Processed + st.DeadLettered + st.Deduplicated }
	waitfor.Until(t, 10*time.Second, "the first messages handled", func() bool { return handled() >= 10 })
	// Again, after checkpoints: from the start, the middle and the end.
	publish(first[0], first[3], first[8], first[9], msg("j", `{"add":100}`))
	waitfor.Until(t, 10*time.Second, "the duplicates delivered", func() bool { return handled() >= 15 })

	r, err := reg.Replay(ctx, j, a, actorhost.ReplayOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(r.State), `{"value":145,"applied":10}`; got != want {
		t.Errorf("state %s, want %s", got, want)
	}
	st := h.Stats()
	if st.Processed != 10 || st.DeadLettered != 1 || st.Deduplicated != 4 || st.EffectsExecuted != 0 {
		t.Errorf("stats %+v; want 10 processed, 1 dead-lettered, 4 deduplicated, no effect", st)
	}
	j.Read(ctx, a.String(), 1, func(e journal.Entry) error {
		if e.Kind == journal.KindEffect {
			t.Errorf("journal entry %d is a side effect (%s)", e.Seq, e.MsgID)
		}
		return nil
	})
	if envs, err := mb.DLQ().List(ctx); err != nil || len(envs) != 1 {
		t.Errorf("%d dead letters (err %v), want the poison message once", len(envs), err)
	}
}
