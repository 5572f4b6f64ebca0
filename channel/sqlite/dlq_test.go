package sqlite_test

import (
	"path/filepath"
	"testing"

	"github.com/postbox-dev/postbox/channel"
	"github.com/postbox-dev/postbox/channel/sqlite"
	"github.com/postbox-dev/postbox/dlq/dlqtest"
)

func TestDLQConformance(t *testing.T) {
	dlqtest.Run(t, func(t *testing.T) dlqtest.Harness {
		mb := open(t, filepath.Join(t.TempDir(), "mailbox.db"), sqlite.Options{Partitions: 4})
		return dlqtest.Harness{
			Store:      mb.DLQ(),
			Backend:    sqlite.Backend,
			Mailbox:    mb.Name(),
			Partitions: mb.Partitions(),
			Next:       dlqtest.Consume(func() channel.Consumer { return mb.Consumer(testConsumerOptions) }),
		}
	})
}
