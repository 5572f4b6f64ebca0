package sqlite_test

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/postbox-dev/postbox/channel"
	"github.com/postbox-dev/postbox/channel/sqlite"
	"github.com/postbox-dev/postbox/dlq/dlqtest"
	"github.com/postbox-dev/postbox/internal/waitfor"
)

// consume runs a consumer of mb until it has received n messages, acking
// each, and returns them in the order received.
func consume(t *testing.T, mb *sqlite.Mailbox, n int) []channel.Message {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var (
		mu   sync.Mutex
		got  []channel.Message
		done = make(chan error, 1)
	)
	c := mb.Consumer(testConsumerOptions)
	go func() {
		done <- c.Run(ctx, func(cl channel.Claim) {
			for m := range cl.Messages() {
				mu.Lock()
				got = append(got, m)
				mu.Unlock()
				if err := cl.Ack(context.Background(), m); err != nil {
					t.Errorf("ack: %v", err)
				}
			}
			if err := cl.Release(context.Background()); err != nil {
				t.Errorf("release: %v", err)
			}
		})
	}()
	waitfor.Until(t, 30*time.Second, fmt.Sprintf("%d messages", n), func() bool {
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

func TestDLQConformance(t *testing.T) {
	dlqtest.Run(t, func(t *testing.T) dlqtest.Harness {
		mb := open(t, filepath.Join(t.TempDir(), "mailbox.db"), sqlite.Options{Partitions: 4})
		return dlqtest.Harness{
			Store:      mb.DLQ(),
			Backend:    sqlite.Backend,
			Mailbox:    mb.Name(),
			Partitions: mb.Partitions(),
			Next: func(t *testing.T, n int) []channel.Message {
				t.Helper()
				got := consume(t, mb, n)
				if len(got) != n {
					t.Fatalf("mailbox delivered %d messages, want %d", len(got), n)
				}
				return got
			},
		}
	})
}
