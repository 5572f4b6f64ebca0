package redis

import (
	"fmt"
	"strings"
	"time"

	"github.com/postbox-dev/postbox/channel/internal/lease"
)

// maxPartitions bounds Options.Partitions. The lease keeper's script names
// every partition's lease key, and a consumer reads every partition it owns; far
// more partitions than worker processes only adds overhead.
const maxPartitions = 4096

// defaultPartitions is the partition count of a new mailbox when
// Options.Partitions is zero.
const defaultPartitions = 8

// Options configure Open and New.
type Options struct {
	// Partitions is how many partition streams the mailbox has. It is fixed
	// when the mailbox is created and stored in Redis; opening an existing
	// mailbox with a different non-zero count is an error, because every
	// address would move to another partition and lose its order.
	//
	// Defaults to 8 for a new mailbox and to the stored count for an
	// existing one.
	Partitions int

	// PoolSize is the connection pool size of the client Open creates. A
	// consumer keeps one connection blocked per owned partition while it waits
	// for new messages, so the pool needs room for those and for
	// publishing, acking and lease renewal besides. New ignores it: size
	// the pool of your own client likewise.
	//
	// Defaults to the partition count plus go-redis's default (10 per
	// GOMAXPROCS).
	PoolSize int
}

func (o Options) validate() error {
	if o.Partitions < 0 || o.Partitions > maxPartitions {
		return fmt.Errorf("redis: Options.Partitions is %d: use 1 to %d, or 0 for the default", o.Partitions, maxPartitions)
	}
	if o.PoolSize < 0 {
		return fmt.Errorf("redis: Options.PoolSize is %d: use a positive size, or 0 for the default", o.PoolSize)
	}
	return nil
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

// ConsumerOptions configure a Consumer.
type ConsumerOptions struct {
	// Owner identifies the consumer in the partition leases, in the heartbeat
	// set and as the consumer name within the streams' consumer group. It
	// must be unique among the consumers of one mailbox: two consumers with
	// the same Owner would renew each other's leases.
	//
	// Defaults to "hostname:pid:random".
	Owner string

	// LeaseTTL is how long a partition stays owned without renewal. Leases and
	// the consumer's heartbeat are renewed every LeaseTTL/3, so a consumer
	// that dies hands its partitions to the others after at most LeaseTTL. A
	// consumer whose renewals fail (Redis unreachable, a long pause) gives
	// its claims up as lost by its own clock, a tenth of LeaseTTL before
	// the lease can end on the server. Use the same value for every
	// consumer of a mailbox.
	//
	// Defaults to 10s.
	LeaseTTL time.Duration

	// BatchSize is how many entries one read takes from a partition.
	//
	// Defaults to 256.
	BatchSize int

	// Buffer is how many messages of one claim may be delivered and not
	// yet acked. When a claim has that many, its partition is not read
	// until acks come in: backpressure instead of an unbounded queue.
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

// common is the part of o the lease engine defines.
func (o ConsumerOptions) common() lease.Options {
	return lease.Options{Owner: o.Owner, LeaseTTL: o.LeaseTTL, BatchSize: o.BatchSize, Buffer: o.Buffer}
}

// WithDefaults returns a copy of o with zero fields set to their defaults.
func (o ConsumerOptions) WithDefaults() ConsumerOptions {
	l := o.common().WithDefaults()
	o.Owner, o.LeaseTTL, o.BatchSize, o.Buffer = l.Owner, l.LeaseTTL, l.BatchSize, l.Buffer
	if o.MaxWait == 0 {
		o.MaxWait = 250 * time.Millisecond
	}
	if o.AckInterval == 0 {
		o.AckInterval = 5 * time.Millisecond
	}
	return o
}

func (o ConsumerOptions) validate() error {
	if err := o.common().Validate(Backend); err != nil {
		return err
	}
	if o.MaxWait < time.Millisecond {
		return fmt.Errorf("redis: ConsumerOptions.MaxWait is %v: use at least 1ms, or 0 for the default", o.MaxWait)
	}
	if o.AckInterval < 0 {
		return fmt.Errorf("redis: ConsumerOptions.AckInterval is %v: use a positive duration, or 0 for the default", o.AckInterval)
	}
	return nil
}
