package actorhost_test

import (
	"context"
	"encoding/json"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/postbox-dev/postbox/actorhost"
	"github.com/postbox-dev/postbox/actors/counter"
	"github.com/postbox-dev/postbox/channel"
	chsqlite "github.com/postbox-dev/postbox/channel/sqlite"
	"github.com/postbox-dev/postbox/journal"
	jsqlite "github.com/postbox-dev/postbox/journal/sqlite"
)

// bundle is a mailbox and a journal in real SQLite files, plus helpers.
type bundle struct {
	t    *testing.T
	dir  string
	mb   *chsqlite.Mailbox
	j    journal.Journal
	reg  *actorhost.Registry
	sink *memSink
}

func setup(t *testing.T) *bundle {
	t.Helper()
	dir := t.TempDir()
	mb, err := chsqlite.Open(filepath.Join(dir, "mailbox.db"), chsqlite.Options{Partitions: 4})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mb.Close() })
	j, err := jsqlite.Open(filepath.Join(dir, "journal.db"), jsqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { j.Close() })
	b := &bundle{t: t, dir: dir, mb: mb, j: j, reg: actorhost.NewRegistry(), sink: &memSink{}}
	if err := counter.Register(b.reg, b.sink); err != nil {
		t.Fatal(err)
	}
	return b
}

// config returns a host config for the bundle, fast retries included.
func (b *bundle) config() actorhost.Config {
	return actorhost.Config{
		Registry: b.reg, Journal: b.j, DeadLetters: b.mb.DLQ(),
		Consumer:       b.mb.Consumer(chsqlite.ConsumerOptions{PollInterval: 2 * time.Millisecond}),
		BackoffInitial: time.Millisecond, BackoffMax: 5 * time.Millisecond,
		MaxAttempts: 3, CheckpointEvery: 5, Concurrency: 8,
	}
}

// start starts a host and stops it when the test ends.
func (b *bundle) start(cfg actorhost.Config) *actorhost.Host {
	b.t.Helper()
	h, err := actorhost.New(cfg)
	if err != nil {
		b.t.Fatal(err)
	}
	if err := h.Start(context.Background()); err != nil {
		b.t.Fatal(err)
	}
	b.t.Cleanup(func() { stopHost(b.t, h) })
	return h
}

func stopHost(t *testing.T, h *actorhost.Host) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := h.Stop(ctx); err != nil {
		t.Errorf("stop: %v", err)
	}
}

func (b *bundle) publish(msgs ...channel.Message) {
	b.t.Helper()
	if err := b.mb.Publisher().Publish(context.Background(), msgs...); err != nil {
		b.t.Fatal(err)
	}
}

func (b *bundle) state(addr string) counter.State {
	b.t.Helper()
	a, err := channel.ParseAddress(addr)
	if err != nil {
		b.t.Fatal(err)
	}
	r, err := b.reg.Replay(context.Background(), b.j, a, actorhost.ReplayOptions{})
	if err != nil {
		b.t.Fatal(err)
	}
	var s counter.State
	if err := json.Unmarshal(r.State, &s); err != nil {
		b.t.Fatal(err)
	}
	return s
}

// wantState fails the test unless the counter at addr holds value from
// applied messages.
func (b *bundle) wantState(addr string, value, applied int64) {
	b.t.Helper()
	if got, want := b.state(addr), (counter.State{Value: value, Applied: applied}); got != want {
		b.t.Errorf("%s = %+v, want %+v", addr, got, want)
	}
}

func (b *bundle) deadLetters() int {
	envs, err := b.mb.DLQ().List(context.Background())
	if err != nil {
		b.t.Fatal(err)
	}
	return len(envs)
}

func add(addr, id string, n int64) channel.Message {
	a, _ := channel.ParseAddress(addr)
	p, _ := json.Marshal(counter.Payload{Add: &n})
	return channel.Message{ID: id, Address: a, Payload: p}
}

// memSink records the counter's notify side effects.
type memSink struct {
	mu    sync.Mutex
	lines []counter.SinkLine
}

func (s *memSink) Notify(_ context.Context, key, actor string, value int64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lines = append(s.lines, counter.SinkLine{Key: key, Actor: actor, Value: value})
	return nil
}

func (s *memSink) snapshot() []counter.SinkLine {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]counter.SinkLine(nil), s.lines...)
}

func (s *memSink) keys() map[string]int {
	out := map[string]int{}
	for _, l := range s.snapshot() {
		out[l.Key]++
	}
	return out
}
