// Package redis is a channel backend that keeps a mailbox in Redis Streams,
// on go-redis.
//
// A mailbox is a fixed number of partitions, each a stream with the
// consumer group "postbox". Consumers, in any number of processes on any
// hosts, share the partitions through leases with epochs. A new owner of a
// partition first claims its pending entries (delivered before and never
// acked, or read but still buffered when a claim ended) and delivers them
// with their IDs and offsets, then reads new ones. Acked entries are
// acknowledged and deleted (XACK and XDEL), so a stream holds only what is
// not yet acked; nothing is trimmed by length or age.
//
// Every command that moves entries into a consumer's pending list or acks
// them runs in a Lua script that first checks the partition's lease, so a
// zombie consumer can neither read new entries nor ack entries the new
// owner has claimed. A call whose reply is lost (a timeout or a dropped
// connection after Redis ran it, or a client retry that runs it twice)
// loses and reorders nothing: every read first serves the consumer's own
// pending entries beyond the last entry it got.
//
// An entry written by something other than Mailbox.Publisher is delivered
// with the ID "<mailbox>/<partition>/<entry ID>" when it has no id field,
// and with HeaderBadAddress when its address field is not "type/id".
//
// # Keys
//
// All keys of a mailbox start with one hash tag, {postbox:<mailbox>}:, so
// they live in one hash slot and the scripts run on Redis Cluster too (one
// mailbox is then served by one shard of the cluster):
//
//	meta         hash: partitions, version
//	s:<p>        the stream of partition p
//	lease:<p>    "<epoch>:<owner>" of partition p's current owner, with a PX TTL
//	epochs       hash: partition -> epoch, incremented on every takeover
//	consumers    sorted set: live consumers scored by heartbeat expiry
//	dlq          stream of dead letters
//	dlq:index    hash: dead-letter ID -> its entry in dlq
//
// Keys nacks:<p> of earlier versions are ignored.
//
// # Durability and limits
//
// With appendonly yes and appendfsync always (as scripts/services.sh runs
// Redis), Publish, acks and leases survive a crash of Redis and a power
// loss once they returned. With appendfsync everysec about a second of
// acknowledged writes can be lost on power loss (published messages
// vanish, acked ones come back); with AOF off, much more. Replication is
// asynchronous: a failover can lose acknowledged writes (WAIT is not used).
// Offsets are the entry ID's millisecond time shifted left by 20 bits plus
// its sequence number: they grow with publish order unless 2^20 entries of
// one partition share a millisecond. Needs Redis 7.0 or newer.
package redis

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"runtime"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"

	"github.com/postbox-dev/postbox/channel"
	"github.com/postbox-dev/postbox/channel/internal/lease"
	"github.com/postbox-dev/postbox/dlq"
)

// Backend is the name a consumer reports as its Backend and dead letters carry.
const Backend = "redis"

// group is the consumer group of every partition stream.
const group = "postbox"

// schemaVersion is stored in the meta hash for a later layout to tell.
const schemaVersion = "1"

// Mailbox is one mailbox in Redis, safe for concurrent use. Its
// publishers, consumers and dead-letter store share one client.
type Mailbox struct {
	client     redis.UniversalClient
	owned      bool // Close closes client
	name       string
	prefix     string
	partitions int

	runs lease.Runs // the consumers' runs: Close stops them
}

// Open connects to the Redis at addr, "host:port" or a redis:// or
// rediss:// URL (as redis.ParseURL takes it), and opens the mailbox named
// mailbox there, creating it when needed. Close closes the connection. ctx
// bounds the setup round trips.
func Open(ctx context.Context, addr, mailbox string, opts Options) (*Mailbox, error) {
	ropts := &redis.Options{Addr: addr}
	if strings.Contains(addr, "://") {
		var err error
		if ropts, err = redis.ParseURL(addr); err != nil {
			return nil, fmt.Errorf("redis: %w", err)
		}
	}
	pool := func(partitions int) int {
		if opts.PoolSize > 0 {
			return opts.PoolSize
		}
		return 10*runtime.GOMAXPROCS(0) + partitions
	}
	ropts.PoolSize = pool(cmp.Or(opts.Partitions, lease.DefaultPartitions))
	client := redis.NewClient(ropts)
	m, err := New(ctx, client, mailbox, opts)
	if err != nil {
		client.Close()
		return nil, err
	}
	m.owned = true
	if ropts.PoolSize < pool(m.partitions) {
		// An existing mailbox with more partitions than guessed: a blocked
		// reader per partition needs a larger pool.
		client.Close()
		ropts.PoolSize = pool(m.partitions)
		m.client = redis.NewClient(ropts)
	}
	return m, nil
}

// New opens the mailbox on a client the caller made (for instance a
// *redis.ClusterClient, or a *redis.Client with options of its own) and
// keeps: Close leaves it open. See Options.PoolSize for sizing its pool.
func New(ctx context.Context, client redis.UniversalClient, mailbox string, opts Options) (*Mailbox, error) {
	if err := opts.validate(); err != nil {
		return nil, err
	}
	if err := validateMailbox(mailbox); err != nil {
		return nil, err
	}
	if err := client.Ping(ctx).Err(); err != nil {
		return nil, fmt.Errorf("redis: connect: %w (is the server up? scripts/services.sh start redis runs one for tests)", err)
	}
	for _, s := range allScripts {
		if err := s.Load(ctx, client).Err(); err != nil {
			return nil, fmt.Errorf("redis: load scripts: %w (the mailbox needs Redis 7.0 or newer)", err)
		}
	}
	m := &Mailbox{client: client, name: mailbox, prefix: "{postbox:" + mailbox + "}:"}
	var err error
	if m.partitions, err = m.init(ctx, opts.Partitions); err != nil {
		return nil, fmt.Errorf("redis: open mailbox %s: %w", mailbox, err)
	}
	return m, nil
}

// init settles the partition count (see lease.StoredPartitions) and makes
// sure every partition has its stream and group.
func (m *Mailbox) init(ctx context.Context, want int) (int, error) {
	// HSETNX: of two processes creating the mailbox at once, one count wins
	// and both read it back.
	var stored *redis.StringCmd
	if _, err := m.client.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.HSetNX(ctx, m.metaKey(), "partitions", cmp.Or(want, lease.DefaultPartitions))
		p.HSetNX(ctx, m.metaKey(), "version", schemaVersion)
		stored = p.HGet(ctx, m.metaKey(), "partitions")
		return nil
	}); err != nil {
		return 0, fmt.Errorf("store partition count: %w", err)
	}
	n, err := lease.StoredPartitions(stored.Val(), want)
	if err != nil {
		return 0, err
	}
	// A group reading from the start, on every partition; MKSTREAM creates the
	// stream. BUSYGROUP: it exists already.
	cmds, err := m.client.Pipelined(ctx, func(p redis.Pipeliner) error {
		for s := range n {
			p.XGroupCreateMkStream(ctx, m.streamKey(int32(s)), group, "0")
		}
		return nil
	})
	if err != nil {
		for _, c := range cmds {
			if err := c.Err(); err != nil && !strings.HasPrefix(err.Error(), "BUSYGROUP") {
				return 0, fmt.Errorf("create consumer groups: %w", err)
			}
		}
	}
	return n, nil
}

// Keys: the mailbox's hash tag, then what the key holds.
func (m *Mailbox) metaKey() string          { return m.prefix + "meta" }
func (m *Mailbox) epochsKey() string        { return m.prefix + "epochs" }
func (m *Mailbox) consumersKey() string     { return m.prefix + "consumers" }
func (m *Mailbox) dlqKey() string           { return m.prefix + "dlq" }
func (m *Mailbox) dlqIndexKey() string      { return m.prefix + "dlq:index" }
func (m *Mailbox) streamKey(p int32) string { return m.prefix + "s:" + strconv.Itoa(int(p)) }
func (m *Mailbox) leaseKey(p int32) string  { return m.prefix + "lease:" + strconv.Itoa(int(p)) }
func (m *Mailbox) partitionKeys(p int32) []string {
	return []string{m.leaseKey(p), m.streamKey(p)}
}
func leaseValue(epoch int64, owner string) string { return strconv.FormatInt(epoch, 10) + ":" + owner }

// Partitions returns the mailbox's partition count.
func (m *Mailbox) Partitions() int { return m.partitions }

// Name returns the mailbox's name, as reported in Message.Mailbox.
func (m *Mailbox) Name() string { return m.name }

// Publisher returns a publisher to the partition streams. A Publish is one
// MULTI/EXEC transaction: all of its messages or none, in one round trip,
// on disk once Redis applied it with appendfsync always.
func (m *Mailbox) Publisher() channel.Publisher {
	return lease.NewPublisher(Backend, m.partitions, m.isClosed, func(ctx context.Context, recs []lease.Record) error {
		_, err := m.client.TxPipelined(ctx, func(tx redis.Pipeliner) error {
			m.xadd(ctx, tx, recs)
			return nil
		})
		return m.failed(err)
	})
}

// Consumer returns a consumer of the partition streams, shared with the
// other consumers of the mailbox, in this process or others; Run reports
// invalid options. Its lease keeper runs one script call per tick. Each
// claim has a reader goroutine; a flusher sends the acks that no read
// carried within AckInterval. A Redis that is away (restarting, loading
// its dataset) loses the consumer its claims but does not end Run.
func (m *Mailbox) Consumer(opts ConsumerOptions) channel.Consumer { return newConsumer(m, opts) }

// DLQ returns the dead-letter stream; Redrive puts messages back in the
// partition streams.
func (m *Mailbox) DLQ() dlq.Store { return &DeadLetters{m: m} }

// Close stops the running consumers, waits for their Run to return, and
// closes the connection if Open made it. It is idempotent; the Mailbox's
// other calls fail with channel.ErrClosed after it.
func (m *Mailbox) Close() error {
	if !m.runs.Close() {
		return nil
	}
	if m.owned {
		if err := m.client.Close(); err != nil {
			return fmt.Errorf("redis: close mailbox %s: %w", m.name, err)
		}
	}
	return nil
}

func (m *Mailbox) isClosed() bool { return m.runs.Closed() }

// failed turns an error of a call that raced with Close into
// channel.ErrClosed.
func (m *Mailbox) failed(err error) error {
	if err != nil && m.isClosed() && !errors.Is(err, channel.ErrClosed) {
		return fmt.Errorf("%w (%v)", channel.ErrClosed, err)
	}
	return err
}
