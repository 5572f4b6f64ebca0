package dlqtest

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/postbox-dev/postbox/channel"
)

// Consume is a Harness.Next for a mailbox read through a channel.Consumer.
// Each call runs a consumer from open, acking every message, until n
// messages have come, and fails t unless exactly n came: those that come
// while it stops count too.
func Consume(open func() channel.Consumer) func(t *testing.T, n int) []channel.Message {
	return func(t *testing.T, n int) []channel.Message {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		var mu sync.Mutex
		var got []channel.Message
		err := open().Run(ctx, func(cl channel.Claim) {
			for m := range cl.Messages() {
				mu.Lock()
				if got = append(got, m); len(got) == n {
					cancel() // Run returns once every claim is released
				}
				mu.Unlock()
				if err := cl.Ack(context.Background(), m); err != nil {
					t.Errorf("ack: %v", err)
				}
			}
			if err := cl.Release(context.Background()); err != nil {
				t.Errorf("release: %v", err)
			}
		})
		if err != nil {
			t.Fatalf("run: %v", err)
		}
		if len(got) != n {
			t.Fatalf("mailbox delivered %d messages, want %d", len(got), n)
		}
		return got
	}
}
