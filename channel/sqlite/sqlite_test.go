package sqlite_test

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/postbox-dev/postbox/channel"
	"github.com/postbox-dev/postbox/channel/channeltest"
	"github.com/postbox-dev/postbox/channel/internal/backendtest"
	"github.com/postbox-dev/postbox/channel/sqlite"
)

// open opens the mailbox at path or fails the test, closing it when t ends.
func open(t testing.TB, path string, opts sqlite.Options) *sqlite.Mailbox {
	return backendtest.MustOpen(t, path, func() (*sqlite.Mailbox, error) { return sqlite.Open(path, opts) })
}

// tryOpen opens the mailbox at path, closing it when t ends.
func tryOpen(t testing.TB, path string, opts sqlite.Options) (*sqlite.Mailbox, error) {
	return backendtest.Open(t, path, func() (*sqlite.Mailbox, error) { return sqlite.Open(path, opts) })
}

// testConsumerOptions fail over fast, so rebalancing tests take seconds.
var testConsumerOptions = sqlite.ConsumerOptions{LeaseTTL: time.Second, PollInterval: 5 * time.Millisecond}

func TestConformance(t *testing.T) {
	channeltest.Run(t, channeltest.Features{Leases: true}, func(t *testing.T) channeltest.Mailbox {
		path := filepath.Join(t.TempDir(), "mailbox.db")
		// Each consumer opens the file on its own, as another worker
		// process would.
		return channeltest.MailboxOf(t, open(t, path, sqlite.Options{Partitions: 4}), func(t *testing.T) channel.Consumer {
			return open(t, path, sqlite.Options{}).Consumer(testConsumerOptions)
		})
	})
}

func TestPartitionCountIsFixed(t *testing.T) {
	backendtest.PartitionCountIsFixed(t, func(t *testing.T) backendtest.Opener[*sqlite.Mailbox] {
		path := filepath.Join(t.TempDir(), "mailbox.db")
		return func(t *testing.T, n int) (*sqlite.Mailbox, error) {
			return tryOpen(t, path, sqlite.Options{Partitions: n})
		}
	})
}

func TestOptionsAreValidated(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		opts  sqlite.Options
		field string
	}{
		{sqlite.Options{Partitions: -1}, "Options.Partitions"},
		{sqlite.Options{Partitions: 1 << 20}, "Options.Partitions"},
		{sqlite.Options{Synchronous: "OFF"}, "Options.Synchronous"},
	} {
		_, err := sqlite.Open(filepath.Join(dir, "x.db"), tc.opts)
		backendtest.Names(t, err, tc.field, "Open(%+v)", tc.opts)
	}
	mb := open(t, filepath.Join(dir, "ok.db"), sqlite.Options{Synchronous: sqlite.SyncNormal})
	for _, tc := range []struct {
		opts  sqlite.ConsumerOptions
		field string
	}{
		{sqlite.ConsumerOptions{LeaseTTL: time.Millisecond}, "ConsumerOptions.LeaseTTL"},
		{sqlite.ConsumerOptions{PollInterval: -1}, "ConsumerOptions.PollInterval"},
		{sqlite.ConsumerOptions{BatchSize: -1}, "ConsumerOptions.BatchSize"},
		{sqlite.ConsumerOptions{Buffer: -1}, "ConsumerOptions.Buffer"},
	} {
		err := mb.Consumer(tc.opts).Run(t.Context(), func(channel.Claim) {})
		backendtest.Names(t, err, tc.field, "Run with %+v", tc.opts)
	}
}
