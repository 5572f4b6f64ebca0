package actorhost_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/postbox-dev/postbox/actorhost"
	"github.com/postbox-dev/postbox/channel"
	"github.com/postbox-dev/postbox/internal/waitfor"
)

// pure is an actor with no side effect: nothing it does waits for the
// group commit, so its outcomes are often still queued when the next
// message (or a duplicate) arrives.
type pure struct {
	Applied []string `json:"applied"`
}

func registerPure(t *testing.T, reg *actorhost.Registry) {
	t.Helper()
	err := actorhost.Register(reg, "pure", func(ctx *actorhost.Context, s *pure, m actorhost.Message) error {
		s.Applied = append(s.Applied, m.ID)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// A duplicate that arrives after a checkpoint, while the original's
// completion is still queued in the group commit, must be caught: the
// checkpoint may not forget outcomes that are not durable yet.
func TestDuplicateOfAnUnflushedOutcomeAcrossACheckpoint(t *testing.T) {
	b := setup(t)
	registerPure(t, b.reg)
	cfg := b.config()
	cfg.CheckpointEvery = 2
	addr := channel.Address{Type: "pure", ID: "a"}
	msg := func(i int) channel.Message {
		return channel.Message{ID: fmt.Sprintf("m%d", i), Address: addr, Payload: []byte("{}")}
	}
	// m0 m1 m0 m2 m3 m2 …: each duplicate follows the checkpoint that its
	// original's completion rode on.
	var msgs []channel.Message
	for i := 0; i < 50; i += 2 {
		msgs = append(msgs, msg(i), msg(i+1), msg(i))
	}
	b.publish(msgs...)
	h := b.start(cfg)
	waitfor.Until(t, 20*time.Second, "every message handled", func() bool {
		st := h.Stats()
		return st.Processed+st.Deduplicated >= 75
	})
	r, err := b.reg.Replay(t.Context(), b.j, addr, actorhost.ReplayOptions{IgnoreCheckpoints: true})
	if err != nil {
		t.Fatal(err)
	}
	if r.Messages != 50 {
		t.Fatalf("%d messages applied, want 50: duplicates were applied again (%s)", r.Messages, r.State)
	}
}
