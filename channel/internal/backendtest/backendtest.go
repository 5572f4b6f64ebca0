// Package backendtest holds what the channel backends' own tests share
// beyond the conformance suite (channel/channeltest): a consumer that
// records what it is given, a consumer that acks until it has seen enough,
// opening a mailbox for one test, waiting for a lost claim, the
// partition-count checks of the leased mailboxes, the test binary as a
// helper consumer process, and the benchmarks' messages.
package backendtest

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/postbox-dev/postbox/channel"
	"github.com/postbox-dev/postbox/internal/waitfor"
)

// Recorder runs a consumer and keeps its claims and deliveries.
type Recorder struct {
	mu     sync.Mutex
	claims []channel.Claim
	got    []channel.Message
}

// Record runs c until t ends, recording every claim and delivery; it acks
// each delivery when ack is set, and nothing else.
func Record(t *testing.T, c channel.Consumer, ack bool) *Recorder {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &Recorder{}
	done := make(chan error, 1)
	go func() {
		done <- c.Run(ctx, func(cl channel.Claim) {
			r.mu.Lock()
			r.claims = append(r.claims, cl)
			r.mu.Unlock()
			for m := range cl.Messages() {
				r.mu.Lock()
				r.got = append(r.got, m)
				r.mu.Unlock()
				if ack {
					if err := cl.Ack(context.Background(), m); err != nil {
						t.Errorf("ack: %v", err)
					}
				}
			}
		})
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("run: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Error("Run did not return within 30s of cancel")
		}
	})
	return r
}

// Received returns the deliveries so far, in the order received.
func (r *Recorder) Received() []channel.Message {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.got)
}

// Claim waits for a claim and returns the latest.
func (r *Recorder) Claim(t *testing.T) channel.Claim {
	t.Helper()
	waitfor.Until(t, 30*time.Second, "a claim", func() bool { r.mu.Lock(); defer r.mu.Unlock(); return len(r.claims) > 0 })
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.claims[len(r.claims)-1]
}

// Consume runs c until it has received n messages, handing each to handle
// (nil: ack it), then stops it, which releases every claim, and returns
// the messages in the order received.
func Consume(t testing.TB, c channel.Consumer, n int, handle func(channel.Claim, channel.Message)) []channel.Message {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var (
		mu   sync.Mutex
		got  []channel.Message
		done = make(chan error, 1)
	)
	go func() {
		done <- c.Run(ctx, func(cl channel.Claim) {
			for m := range cl.Messages() {
				mu.Lock()
				got = append(got, m)
				mu.Unlock()
				if handle != nil {
					handle(cl, m)
				} else if err := cl.Ack(context.Background(), m); err != nil {
					t.Errorf("ack: %v", err)
				}
			}
			if err := cl.Release(context.Background()); err != nil {
				t.Errorf("release: %v", err)
			}
		})
	}()
	waitfor.Until(t, 30*time.Second, "messages", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(got) >= n
	})
	cancel()
	if err := <-done; err != nil { // returns after every claim released
		t.Fatalf("run: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	return slices.Clone(got)
}

// Open opens a mailbox with open and closes it when t ends.
func Open[M io.Closer](t testing.TB, name string, open func() (M, error)) (M, error) {
	mb, err := open()
	if err == nil {
		t.Cleanup(func() {
			if err := mb.Close(); err != nil {
				t.Errorf("close %s: %v", name, err)
			}
		})
	}
	return mb, err
}

// MustOpen is Open that fails t when the mailbox does not open.
func MustOpen[M io.Closer](t testing.TB, name string, open func() (M, error)) M {
	t.Helper()
	mb, err := Open(t, name, open)
	if err != nil {
		t.Fatalf("open %s: %v", name, err)
	}
	return mb
}

// Lost waits up to timeout for cl to be lost (what says after what) and
// checks that its Messages is closed then.
func Lost(t testing.TB, cl channel.Claim, timeout time.Duration, what string) {
	t.Helper()
	waitfor.Receive(t, timeout, what, cl.Lost())
	if _, open := <-cl.Messages(); open {
		t.Error("Messages still open after Lost")
	}
}

// Names checks that err names field: an option refused with an error
// that says which. format and args say what returned err.
func Names(t testing.TB, err error, field, format string, args ...any) {
	t.Helper()
	if err == nil || !strings.Contains(err.Error(), field) {
		t.Errorf("%s: %v, want an error naming %s", fmt.Sprintf(format, args...), err, field)
	}
}

// Mailbox is what the helpers need of a backend's Mailbox.
type Mailbox interface {
	Publisher() channel.Publisher
	Partitions() int
}

// Opener opens a handle on one mailbox with Options.Partitions set to
// partitions; a handle it returns is closed when t ends.
type Opener[M Mailbox] func(t *testing.T, partitions int) (M, error)

// PartitionCountIsFixed checks that a mailbox keeps the partition count it
// was created with: opening it with another fails naming the stored count,
// 0 or the same count opens it, and a new mailbox has the default 8.
// fresh returns an Opener of a new mailbox.
func PartitionCountIsFixed[M Mailbox](t *testing.T, fresh func(t *testing.T) Opener[M]) {
	open := fresh(t)
	if _, err := open(t, 6); err != nil {
		t.Fatal(err)
	}
	_, err := open(t, 8)
	if err == nil || !strings.Contains(err.Error(), "has 6 partitions") {
		t.Fatalf("reopen with 8 partitions: %v, want an error naming the stored 6", err)
	}
	for _, n := range []int{0, 6} {
		mb, err := open(t, n)
		if err != nil || mb.Partitions() != 6 {
			t.Errorf("reopen with Partitions %d: %v, want the stored 6 (%v)", n, mb, err)
		}
	}
	if mb, err := fresh(t)(t, 0); err != nil || mb.Partitions() != 8 {
		t.Errorf("new mailbox: %v, want the default 8 partitions (%v)", mb, err)
	}
}

// BenchMessages returns the benchmarks' messages start to start+n.
func BenchMessages(start, n int) []channel.Message {
	msgs := make([]channel.Message, n)
	for i := range msgs {
		k := start + i
		msgs[i] = channel.Message{
			Address: channel.Address{Type: "bench", ID: strconv.Itoa(k % 1000)},
			Payload: []byte(`{"op":"increment","by":1}`),
			Headers: map[string]string{"trace": strconv.Itoa(k)},
		}
	}
	return msgs
}

// PublishBatches publishes BenchMessages 0 to n in batches.
func PublishBatches(b testing.TB, pub channel.Publisher, n, batch int) {
	for start := 0; start < n; start += batch {
		if err := pub.Publish(context.Background(), BenchMessages(start, min(batch, n-start))...); err != nil {
			b.Error(err)
			return
		}
	}
}

// ConsumeAcking runs c, acking every message one by one as a host does,
// until n messages were received; then it stops c, which releases every
// claim and so makes the last acks durable.
func ConsumeAcking(b testing.TB, c channel.Consumer, n int) {
	var got atomic.Int64
	all := make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- c.Run(ctx, func(cl channel.Claim) {
			for m := range cl.Messages() {
				if err := cl.Ack(ctx, m); err != nil {
					b.Error(err)
				}
				if got.Add(1) == int64(n) {
					close(all)
				}
			}
			if err := cl.Release(context.Background()); err != nil {
				b.Error(err)
			}
		})
	}()
	select {
	case <-all:
	case <-time.After(5 * time.Minute):
		b.Fatalf("received %d of %d messages", got.Load(), n)
	}
	cancel()
	if err := <-done; err != nil {
		b.Fatal(err)
	}
}
