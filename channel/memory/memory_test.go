package memory_test

import (
	"testing"
	"time"

	"github.com/postbox-dev/postbox/channel"
	"github.com/postbox-dev/postbox/channel/channeltest"
	"github.com/postbox-dev/postbox/channel/internal/backendtest"
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
	channeltest.Run(t, channeltest.Features{Leases: true, Timeout: 10 * time.Second}, func(t *testing.T) channeltest.Mailbox {
		mb := newMailbox(t, memory.Options{Partitions: 4})
		return channeltest.MailboxOf(t, mb, func(*testing.T) channel.Consumer { return mb.Consumer() })
	})
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
				got := backendtest.Consume(t, mb.Consumer(), n, nil)
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
