package redis

import (
	"cmp"
	"fmt"
	"strings"
	"time"

	"github.com/postbox-dev/postbox/channel/internal/lease"
)

// Options configure Open and New.
type Options struct {
	// Partitions is how many partition streams the mailbox has, 1 to 4096.
	// It is stored in Redis when the mailbox is created; opening it with
	// another non-zero count is an error, as every address would move to
	// another partition and lose its order.
	//
	// Defaults to 8 for a new mailbox and to the stored count for an
	// existing one.
	Partitions int

	// PoolSize is the connection pool size of the client Open creates. A
	// consumer keeps one connection blocked per owned partition while it
	// waits for new messages, so the pool needs room for those and for
	// publishing, acking and lease renewal besides. New ignores it: size
	// the pool of your own client likewise.
	//
	// Defaults to the partition count plus go-redis's default (10 per
	// GOMAXPROCS).
	PoolSize int
}

func (o Options) validate() error {
	if o.PoolSize < 0 {
		return fmt.Errorf("redis: Options.PoolSize is %d: use a positive size, or 0 for the default", o.PoolSize)
	}
	return lease.CheckPartitions(Backend, o.Partitions)
}

// validateMailbox checks a mailbox name: it goes into the keys' hash tag.
func validateMailbox(name string) error {
	if name == "" {
		return fmt.Errorf("redis: empty mailbox name: name the mailbox, such as orders")
	}
	if strings.ContainsAny(name, "{}") {
		return fmt.Errorf("redis: mailbox name %q: braces would break the keys' hash tag; leave them out", name)
	}
	return nil
}

// ConsumerOptions configure Mailbox.Consumer.
type ConsumerOptions struct {
	// Owner names the consumer in the leases, the heartbeat set and the
	// streams' consumer group; unique among the consumers of a mailbox
	// (two of one name would renew each other's leases).
	//
	// Defaults to "hostname:pid:random".
	Owner string

	// LeaseTTL is how long a partition stays owned without renewal: a
	// consumer that dies hands its partitions on after at most LeaseTTL,
	// and one whose renewals fail (Redis unreachable, a long pause) gives
	// its claims up as lost by its own clock a tenth of LeaseTTL before.
	// Use the same value for every consumer of a mailbox.
	//
	// Defaults to 10s.
	LeaseTTL time.Duration

	// BatchSize is how many entries one read takes from a partition.
	//
	// Defaults to 256.
	BatchSize int

	// Buffer is how many messages of one claim may be delivered and not
	// yet acked; a claim with that many is not read until acks come in.
	//
	// Defaults to 1024.
	Buffer int

	// MaxWait is how long a claim's reader blocks in one XREAD waiting for
	// new entries before it looks around again. It bounds how long Run
	// takes to return once its claims are done.
	//
	// Defaults to 250ms.
	MaxWait time.Duration

	// AckInterval is how long acks may wait in the claim's buffer before
	// they are sent to Redis, when no read carries them sooner. A crash
	// redelivers the acks that were still buffered.
	//
	// Defaults to 5ms.
	AckInterval time.Duration
}

// WithDefaults returns a copy of o with zero fields set to their defaults.
func (o ConsumerOptions) WithDefaults() ConsumerOptions {
	o.Owner, o.LeaseTTL, o.BatchSize, o.Buffer = lease.Defaults(o.Owner, o.LeaseTTL, o.BatchSize, o.Buffer)
	o.MaxWait = cmp.Or(o.MaxWait, 250*time.Millisecond)
	o.AckInterval = cmp.Or(o.AckInterval, 5*time.Millisecond)
	return o
}

// validate checks what the lease engine does not.
func (o ConsumerOptions) validate() error {
	if o.MaxWait < time.Millisecond {
		return fmt.Errorf("redis: ConsumerOptions.MaxWait is %v: use at least 1ms, or 0 for the default", o.MaxWait)
	}
	if o.AckInterval < 0 {
		return fmt.Errorf("redis: ConsumerOptions.AckInterval is %v: use a positive duration, or 0 for the default", o.AckInterval)
	}
	return nil
}
