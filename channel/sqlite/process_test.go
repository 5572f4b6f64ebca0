//go:build unix

package sqlite_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/postbox-dev/postbox/channel"
	"github.com/postbox-dev/postbox/channel/channeltest"
	"github.com/postbox-dev/postbox/channel/internal/backendtest"
	"github.com/postbox-dev/postbox/channel/sqlite"
	"github.com/postbox-dev/postbox/internal/testenv"
)

// The test binary doubles as a helper consumer process for
// TestLeasesAcrossProcesses, of the mailbox file at a path.
func TestMain(m *testing.M) {
	backendtest.Main(m, func(_ context.Context, path string) (*sqlite.Mailbox, error) {
		return sqlite.Open(path, sqlite.Options{})
	}, func(mb *sqlite.Mailbox, owner string, leaseTTL time.Duration) channel.Consumer {
		return mb.Consumer(sqlite.ConsumerOptions{Owner: owner, LeaseTTL: leaseTTL, PollInterval: 5 * time.Millisecond})
	})
}

func TestLeasesAcrossProcesses(t *testing.T) {
	channeltest.RunAcrossProcesses(t, func(t *testing.T) channeltest.ProcessMailbox {
		const partitions = 4
		db := filepath.Join(t.TempDir(), "mailbox.db")
		mb := open(t, db, sqlite.Options{Partitions: partitions})
		check := testenv.SQLite(t, db)
		return channeltest.ProcessMailbox{
			Name:       db,
			Partitions: partitions,
			Publisher:  mb.Publisher(),
			Drained: func(t *testing.T) bool {
				var n int
				if err := check.QueryRow(`SELECT count(*) FROM mailbox_messages`).Scan(&n); err != nil {
					t.Fatal(err)
				}
				return n == 0
			},
		}
	})
}
