package memory_test

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/postbox-dev/postbox/channel"
	"github.com/postbox-dev/postbox/channel/channeltest"
	"github.com/postbox-dev/postbox/channel/memory"
	"github.com/postbox-dev/postbox/dlq/dlqtest"
)

// newMailbox returns a mailbox closed when t ends.
func newMailbox(t *testing.T, opts memory.Options) *memory.Mailbox {
	t.Helper()
	mb := memory.New(opts)
	t.Cleanup(func() {
		if err := mb.Close(); err != nil {
			t.Errorf("close mailbox: %v", err)
		}
	})
	return mb
}

func TestConformance(t *testing.T) {
	channeltest.Run(t, channeltest.Features{
		Leases:  true,
		Timeout: 10 * time.Second,
	}, func(t *testing.T) channeltest.Mailbox {
		mb := newMailbox(t, memory.Options{Partitions: 4})
		pub := mb.Publisher()
		t.Cleanup(func() { pub.Close() })
		return channeltest.Mailbox{
			Publisher:  pub,
			Partitions: mb.Partitions(),
			NewConsumer: func(t *testing.T) channel.Consumer {
				c := mb.Consumer()
				t.Cleanup(func() { c.Close() })
				return c
			},
		}
	})
}

// consume runs a consumer of mb until it has received n messages, acking
// each, and returns them in the order received.
func consume(t *testing.T, mb *memory.Mailbox, n int) []channel.Message {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var (
		mu   sync.Mutex
		got  []channel.Message
		more = make(chan struct{}, 1)
		done = make(chan error, 1)
	)
	c := mb.Consumer()
	go func() {
		done <- c.Run(ctx, func(cl channel.Claim) {
			for m := range cl.Messages() {
				mu.Lock()
				got = append(got, m)
				mu.Unlock()
				select {
				case more <- struct{}{}:
				default:
				}
				if err := cl.Ack(context.Background(), m); err != nil {
					t.Errorf("ack: %v", err)
				}
			}
			if err := cl.Release(context.Background()); err != nil {
				t.Errorf("release: %v", err)
			}
		})
	}()
	deadline := time.After(10 * time.Second)
	for {
		mu.Lock()
		k := len(got)
		mu.Unlock()
		if k >= n {
			break
		}
		select {
		case <-more:
		case <-deadline:
			t.Fatalf("received %d messages, want %d", k, n)
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("run: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	return slices.Clone(got)
}

func TestDLQConformance(t *testing.T) {
	dlqtest.Run(t, func(t *testing.T) dlqtest.Harness {
		mb := newMailbox(t, memory.Options{Name: "dlq-test", Partitions: 4})
		return dlqtest.Harness{
			Store:      mb.DLQ(),
			Backend:    memory.Backend,
			Mailbox:    mb.Name(),
			Partitions: mb.Partitions(),
			Next: func(t *testing.T, n int) []channel.Message {
				t.Helper()
				got := consume(t, mb, n)
				// Everything is delivered at once: more than n is a
				// redrive that published twice.
				if len(got) != n || mb.Pending() != 0 {
					t.Fatalf("mailbox delivered %d messages and holds %d more, want %d and none", len(got), mb.Pending(), n)
				}
				return got
			},
		}
	})
}
