package sqlite

import (
	"cmp"
	"fmt"
	"strings"
	"time"

	"github.com/postbox-dev/postbox/channel/internal/lease"
	"github.com/postbox-dev/postbox/internal/sqlitedb"
)

// Synchronous is SQLite's synchronous setting: how hard a commit tries to
// survive power loss.
type Synchronous = sqlitedb.Synchronous

const (
	// SyncFull fsyncs the write-ahead log on every commit, so a published
	// message or an ack survives power loss once the call returns.
	SyncFull = sqlitedb.SyncFull
	// SyncNormal fsyncs only at checkpoints: commits survive a crash of the
	// process, but the last ones may be lost when the machine loses power.
	SyncNormal = sqlitedb.SyncNormal
)

// Options configure Open.
type Options struct {
	// Synchronous trades durability on power loss for commit latency.
	//
	// Defaults to SyncFull.
	Synchronous Synchronous

	// Partitions is how many partitions the mailbox has, 1 to 4096. It is
	// stored in the file when the mailbox is created; opening it with
	// another non-zero count is an error, as every address would move to
	// another partition and lose its order.
	//
	// Defaults to 8 for a new mailbox and to the stored count for an
	// existing one.
	Partitions int
}

// WithDefaults returns a copy of o with zero fields set to their defaults,
// but for Partitions: only Open knows whether the file holds a mailbox.
func (o Options) WithDefaults() Options {
	o.Synchronous = cmp.Or(o.Synchronous, SyncFull)
	return o
}

func (o Options) validate() error {
	switch Synchronous(strings.ToUpper(string(o.Synchronous))) {
	case SyncFull, SyncNormal:
	default:
		return fmt.Errorf("sqlite: Options.Synchronous is %q: use SyncFull or SyncNormal", o.Synchronous)
	}
	return lease.CheckPartitions(Backend, o.Partitions)
}

// ConsumerOptions configure Mailbox.Consumer.
type ConsumerOptions struct {
	// Owner names the consumer in the lease table; unique among the
	// consumers of a mailbox (two of one name would renew each other's
	// leases).
	//
	// Defaults to "hostname:pid:random".
	Owner string

	// LeaseTTL is how long a partition stays owned without renewal: a
	// consumer that dies hands its partitions on after at most LeaseTTL,
	// and one whose renewals fail (a stalled disk, a long pause) gives its
	// claims up as lost by its own clock a tenth of LeaseTTL before. Use
	// the same value for every consumer of a mailbox.
	//
	// Defaults to 10s.
	LeaseTTL time.Duration

	// PollInterval is how long an idle consumer waits between polls. A poll
	// that finds a full batch is followed by the next one at once.
	//
	// Defaults to 10ms.
	PollInterval time.Duration

	// BatchSize is how many messages one poll takes from a partition.
	//
	// Defaults to 256.
	BatchSize int

	// Buffer is how many messages of one claim may be delivered and not yet
	// acked; a claim with that many is not polled until acks come in.
	//
	// Defaults to 1024.
	Buffer int
}

// WithDefaults returns a copy of o with zero fields set to their defaults.
func (o ConsumerOptions) WithDefaults() ConsumerOptions {
	o.Owner, o.LeaseTTL, o.BatchSize, o.Buffer = lease.Defaults(o.Owner, o.LeaseTTL, o.BatchSize, o.Buffer)
	o.PollInterval = cmp.Or(o.PollInterval, 10*time.Millisecond)
	return o
}

// validate checks what the lease engine does not.
func (o ConsumerOptions) validate() error {
	if o.PollInterval < 0 {
		return fmt.Errorf("sqlite: ConsumerOptions.PollInterval is %v: use a positive duration, or 0 for the default", o.PollInterval)
	}
	return nil
}
