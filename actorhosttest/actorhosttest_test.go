package actorhosttest_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/postbox-dev/postbox/actorhost"
	"github.com/postbox-dev/postbox/actorhosttest"
)

// shop charges once per order message and keeps the total.
type shop struct {
	Total   int64    `json:"total"`
	Charged []string `json:"charged"`
}

func shopRegistry(t *testing.T, calls *atomic.Int64) *actorhost.Registry {
	reg := actorhost.NewRegistry()
	err := actorhost.Register(reg, "shop", func(c *actorhost.Context, s *shop, m actorhost.Message) error {
		var p struct{ Amount int64 }
		if err := json.Unmarshal(m.Payload, &p); err != nil || p.Amount <= 0 {
			return actorhost.Permanent(fmt.Errorf("want {\"amount\": N}, got %q", m.Payload))
		}
		id, err := actorhost.Effect(c, "charge", func(_ context.Context, key string) (string, error) {
			calls.Add(1)
			return "ch-" + key, nil
		})
		if err != nil {
			return err
		}
		s.Total += p.Amount
		s.Charged = append(s.Charged, id)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return reg
}

func TestKitRunsAHandlerAndShowsWhatCameOfIt(t *testing.T) {
	var calls atomic.Int64
	k := actorhosttest.New(t, shopRegistry(t, &calls), actorhosttest.Options{CheckpointEvery: 2})
	k.Send(
		actorhosttest.Msg("shop/1", "o1", `{"amount": 5}`),
		actorhosttest.Msg("shop/1", "o2", `{"amount": 7}`),
		actorhosttest.Msg("shop/1", "bad", `nonsense`),
		actorhosttest.Msg("shop/1", "o3", `{"amount": 11}`),
	)
	k.Send(actorhosttest.Msg("shop/1", "o2", `{"amount": 7}`)) // again: deduplicated
	k.Settle()

	var s shop
	k.State("shop/1", &s)
	if s.Total != 23 || strings.Join(s.Charged, ",") != "ch-o1#0,ch-o2#0,ch-o3#0" {
		t.Errorf("state %+v, want total 23 charged once per order in order", s)
	}
	effects := k.Effects("shop/1")
	var keys []string
	for _, e := range effects {
		keys = append(keys, e.Name+" "+e.Key+" "+string(e.Result))
	}
	if strings.Join(keys, "; ") != `charge o1#0 "ch-o1#0"; charge o2#0 "ch-o2#0"; charge o3#0 "ch-o3#0"` || calls.Load() != 3 {
		t.Errorf("effects %q (%d calls), want one charge per order with its key", keys, calls.Load())
	}
	for id, want := range map[string]string{"o1": "completed", "o2": "completed", "o3": "completed", "bad": "dead-lettered", "never": ""} {
		if got := k.Outcome("shop/1", id); got != want {
			t.Errorf("Outcome(%s) = %q, want %q", id, got, want)
		}
	}
	if dl := k.DeadLetters(); len(dl) != 1 || dl[0].MessageID != "bad" || dl[0].Reason != "permanent error" {
		t.Errorf("dead letters %+v, want the bad one", dl)
	}
	if st := k.Host().Stats(); st.Deduplicated != 1 {
		t.Errorf("Stats().Deduplicated = %d, want 1", st.Deduplicated)
	}
	k.VerifyReplay("shop/1") // a deterministic handler passes
}

// recorder is a testing.TB that keeps what a check reports.
type recorder struct {
	testing.TB
	mu     sync.Mutex
	errors []string
}

func (r *recorder) Helper() {}
func (r *recorder) Errorf(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errors = append(r.errors, fmt.Sprintf(format, args...))
}

// Fatalf and Fatal record, then stop the caller as testing's do.
func (r *recorder) Fatalf(format string, args ...any) { r.Errorf(format, args...); panic(errStopped) }
func (r *recorder) Fatal(args ...any)                 { r.Errorf("%s", fmt.Sprint(args...)); panic(errStopped) }

var errStopped = errors.New("recorder: stopped by Fatal")

func (r *recorder) said() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return strings.Join(r.errors, "\n")
}

// A handler that reads something outside its state, message and context
// (here a global counter) runs differently on replay: VerifyReplay says so.
func TestVerifyReplayCatchesANondeterministicHandler(t *testing.T) {
	var global atomic.Int64
	reg := actorhost.NewRegistry()
	actorhost.Register(reg, "tick", func(c *actorhost.Context, s *struct{ N int64 }, m actorhost.Message) error {
		s.N += global.Add(1) // not a function of the state and the message
		return nil
	})
	k := actorhosttest.New(t, reg, actorhosttest.Options{CheckpointEvery: 3})
	for i := range 7 {
		k.Send(actorhosttest.Msg("tick/1", fmt.Sprint("t", i), "{}"))
	}
	k.Settle()
	r := &recorder{TB: t}
	actorhosttest.VerifyReplay(r, reg, k.Journal(), "tick/1")
	if !strings.Contains(r.said(), "not deterministic") {
		t.Errorf("VerifyReplay of a nondeterministic handler said %q, want it to say so", r.said())
	}
}

// A handler that asks for other side effects on replay than it did live
// (its code changed, or it branches on the clock) does not replay.
func TestVerifyReplayCatchesChangedSideEffects(t *testing.T) {
	var renamed atomic.Bool
	reg := actorhost.NewRegistry()
	actorhost.Register(reg, "mail", func(c *actorhost.Context, s *struct{ Sent int }, m actorhost.Message) error {
		name := "send"
		if renamed.Load() {
			name = "send-v2"
		}
		if _, err := c.SideEffect(name, func(context.Context, string) ([]byte, error) { return []byte("ok"), nil }); err != nil {
			return err
		}
		s.Sent++
		return nil
	})
	k := actorhosttest.New(t, reg, actorhosttest.Options{CheckpointEvery: 100})
	k.Send(actorhosttest.Msg("mail/1", "m1", "{}"), actorhosttest.Msg("mail/1", "m2", "{}"))
	k.Settle()
	r := &recorder{TB: t}
	actorhosttest.VerifyReplay(r, reg, k.Journal(), "mail/1")
	if r.said() != "" {
		t.Fatalf("VerifyReplay before the change: %s", r.said())
	}
	renamed.Store(true)
	actorhosttest.VerifyReplay(r, reg, k.Journal(), "mail/1")
	if !strings.Contains(r.said(), "does not replay") {
		t.Errorf("VerifyReplay after the handler changed its side effects said %q, want that the journal does not replay", r.said())
	}
}

func TestNewWithoutRegistrySaysWhatToDo(t *testing.T) {
	r := &recorder{TB: t}
	defer func() {
		if p := recover(); p != errStopped {
			t.Errorf("New(nil) did not stop the test: %v", p)
		}
		if !strings.Contains(r.said(), "no registry") {
			t.Errorf("New(nil) said %q", r.said())
		}
	}()
	actorhosttest.New(r, nil, actorhosttest.Options{})
}
