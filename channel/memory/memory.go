// Package memory is a channel backend that keeps a mailbox in memory, for
// tests and single-process use. Nothing is durable: messages, acks and dead
// letters live as long as the Mailbox value, and a process crash loses them.
//
// It keeps the channel contract as the durable backends do, several
// consumers sharing the partitions: it passes channel/channeltest and
// dlq/dlqtest.
//
// It is deterministic, for simulations: which consumer owns which partition
// and what a claim delivers depend only on the order of calls, never on map
// order or randomness, and it reads the clock only through time.Now and
// timers. It starts no goroutine of its own besides the onClaim calls and
// timer callbacks, so it runs inside testing/synctest bubbles; create the
// Mailbox and its consumers inside the bubble then.
//
// Test hooks inject the faults of a real mailbox: Revoke (a rebalance),
// Lose (a lease lost without warning) and Consumer.Crash (a worker
// process dying). Pending and Acked let a checker see what was acknowledged.
package memory

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/postbox-dev/postbox/channel"
	"github.com/postbox-dev/postbox/dlq"
)

// Backend is the name this package reports in Consumer.Backend and in
// dead-letter provenance.
const Backend = "memory"

// Options configure New. Zero and negative values mean the defaults.
type Options struct {
	// Name names the mailbox in Message.Mailbox and in the IDs given to
	// messages published without one.
	//
	// Defaults to "memory".
	Name string

	// Partitions is how many partitions the mailbox has.
	//
	// Defaults to 8.
	Partitions int

	// Buffer is how many messages one claim may have delivered and not yet
	// acked. A claim at the limit gets nothing more until acks
	// come in: backpressure, as on the other backends.
	//
	// Defaults to 1024.
	Buffer int

	// ReleaseTimeout bounds how long a claim whose Messages was closed
	// (rebalance, Revoke, Run stopping) may take to call Release. After it,
	// the claim is lost, as a lease would expire, and its partition moves.
	//
	// Defaults to 30s.
	ReleaseTimeout time.Duration

	// ForgetAcked stops the mailbox from keeping the IDs of acked messages
	// for Acked, which otherwise grow with every ack: set it in a
	// long-running process.
	//
	// Defaults to false: Acked reports every ack.
	ForgetAcked bool
}

func (o Options) withDefaults() Options {
	if o.Name == "" {
		o.Name = "memory"
	}
	if o.Partitions <= 0 {
		o.Partitions = 8
	}
	if o.Buffer <= 0 {
		o.Buffer = 1024
	}
	if o.ReleaseTimeout <= 0 {
		o.ReleaseTimeout = 30 * time.Second
	}
	return o
}

// Mailbox is one in-memory mailbox: its partitions, the consumers sharing
// them, and its dead letters. It is safe for concurrent use.
//
// Offsets start at 1 in every partition and grow by one per message.
type Mailbox struct {
	opts Options

	// mu guards everything below, and the state of every Consumer and
	// Claim of the mailbox. It is never held while calling user code.
	mu        sync.Mutex
	closed    bool
	parts     []*partition
	members   []*Consumer // consumers taking partitions, in creation order
	running   []*Consumer // consumers whose Run has not returned
	consumers int         // consumers created so far
	runs      sync.WaitGroup
	dead      deadLetters
}

// partition is one partition's log and ownership.
type partition struct {
	id      int32
	last    int64     // the offset given to the newest message, 0 for none
	log     []*record // unacked messages in offset order, and some acked ones (see ackLocked)
	unacked int
	stale   int       // acked records still in log
	acked   []string  // IDs in ack order
	target  *Consumer // the consumer that should own the partition
	owner   *Claim    // the claim that does, active or draining, or nil
	handoff *Claim    // released, its onClaim still running: the next claim waits for it
}

// record is one message in a partition.
type record struct {
	msg    channel.Message // as stored: positions set
	holder *Claim          // the claim it is out with, not acked
	acked  bool
}

// New returns an empty mailbox.
func New(opts Options) *Mailbox {
	opts = opts.withDefaults()
	m := &Mailbox{opts: opts, parts: make([]*partition, opts.Partitions)}
	for i := range m.parts {
		m.parts[i] = &partition{id: int32(i)}
	}
	return m
}

// Name returns the mailbox's name as reported in Message.Mailbox.
func (m *Mailbox) Name() string { return m.opts.Name }

// Partitions returns the mailbox's partition count.
func (m *Mailbox) Partitions() int { return m.opts.Partitions }

// Publisher returns a publisher for the mailbox. Closing it does not close
// the Mailbox.
func (m *Mailbox) Publisher() channel.Publisher { return &Publisher{m: m} }

// Consumer returns a new consumer of the mailbox. Consumers are ordered by
// creation, which decides how partitions are split between them.
func (m *Mailbox) Consumer() *Consumer {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.consumers++
	return &Consumer{m: m, seq: m.consumers}
}

// DLQ returns the mailbox's dead-letter store. Redrive puts messages back
// into this mailbox.
func (m *Mailbox) DLQ() dlq.Store { return &DeadLetters{m: m} }

// Close stops the running consumers gracefully, as cancelling their Run
// would, and waits for their Run to return, so it must not be called from
// onClaim. Calls after Close return channel.ErrClosed. Close is idempotent.
func (m *Mailbox) Close() error {
	m.mu.Lock()
	m.closed = true
	for _, c := range m.running {
		c.signalStopLocked()
	}
	m.mu.Unlock()
	m.runs.Wait()
	return nil
}

// Pending returns how many messages are published and not acked, in every
// partition, including those out with a claim. It is an inspection hook
// for tests.
func (m *Mailbox) Pending() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := 0
	for _, p := range m.parts {
		n += p.unacked
	}
	return n
}

// Acked returns the IDs of the messages acked on partition p, in ack
// order. A message published twice under one ID appears once per ack. It
// is an inspection hook for tests; it returns nil for an unknown partition,
// and always with Options.ForgetAcked.
func (m *Mailbox) Acked(p int32) []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	if p < 0 || int(p) >= len(m.parts) {
		return nil
	}
	return slices.Clone(m.parts[p].acked)
}

// Revoke is a test hook: a graceful rebalance of partition p. Its claim's
// Messages closes, and p is claimed again, possibly by the same consumer,
// once the owner has released it and returned from onClaim, or after
// Options.ReleaseTimeout, when the claim is lost. It reports whether p had
// an active claim to revoke.
func (m *Mailbox) Revoke(p int32) bool { return m.endClaim(p, false) }

// Lose is a test hook: the claim of partition p is lost without warning,
// as when a lease expires, and p is claimed again at once, possibly by the
// same consumer, while the old owner may still be working. It reports
// whether p had a claim to lose.
func (m *Mailbox) Lose(p int32) bool { return m.endClaim(p, true) }

// endClaim loses the claim of partition p, or drains it if it is active.
func (m *Mailbox) endClaim(p int32, lose bool) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if p < 0 || int(p) >= len(m.parts) {
		return false
	}
	switch cl := m.parts[p].owner; {
	case cl == nil:
		return false
	case lose:
		cl.endLocked(stateLost)
		m.rebalanceLocked()
	case cl.state != stateActive:
		return false
	default:
		cl.drainLocked()
	}
	return true
}

// Publisher publishes to a Mailbox. It is safe for concurrent use.
type Publisher struct {
	m      *Mailbox
	closed bool // guarded by m.mu
}

var _ channel.Publisher = (*Publisher)(nil)

// Publish implements channel.Publisher. Each message takes the next offset
// of its partition; one with an empty ID gets "NAME/PARTITION/OFFSET", as a
// Kafka record without one does. Payload and headers are copied.
func (p *Publisher) Publish(ctx context.Context, msgs ...channel.Message) error {
	m := p.m
	m.mu.Lock()
	defer m.mu.Unlock()
	if p.closed {
		return fmt.Errorf("memory: publish: %w", channel.ErrClosed)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("memory: publish: %w", err)
	}
	if err := channel.CheckPublish(msgs); err != nil {
		return fmt.Errorf("memory: %w", err)
	}
	if m.closed {
		return fmt.Errorf("memory: publish: %w", channel.ErrClosed)
	}
	m.appendLocked(msgs)
	return nil
}

// Close makes later Publish calls fail with channel.ErrClosed. It does not
// close the Mailbox, and it is idempotent.
func (p *Publisher) Close() error {
	p.m.mu.Lock()
	defer p.m.mu.Unlock()
	p.closed = true
	return nil
}

// Inject appends msgs as they are, without the checks Publish makes: an
// address or message ID that breaks the identifier limits, or no address at
// all, as a client other than a Publisher may write them to a real mailbox
// (kcat, XADD). It is for tests of what consumes such messages. An empty ID
// is assigned, as by Publish.
func (m *Mailbox) Inject(msgs ...channel.Message) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return fmt.Errorf("memory: inject: %w", channel.ErrClosed)
	}
	m.appendLocked(msgs)
	return nil
}

// appendLocked stores msgs and hands them to the claims that own their
// partitions.
func (m *Mailbox) appendLocked(msgs []channel.Message) {
	now := time.Now()
	touched := make([]bool, len(m.parts))
	for _, msg := range msgs {
		key := msg.Address.String()
		p := m.parts[channel.HomePartition(key, len(m.parts))]
		p.last++
		stored := channel.Message{
			ID:          msg.ID,
			Address:     msg.Address,
			Payload:     bytes.Clone(msg.Payload),
			Headers:     maps.Clone(msg.Headers),
			Mailbox:     m.opts.Name,
			Partition:   p.id,
			Offset:      p.last,
			PublishedAt: now,
		}
		if stored.ID == "" {
			stored.ID = fmt.Sprintf("%s/%d/%d", m.opts.Name, p.id, p.last)
		}
		p.log = append(p.log, &record{msg: stored})
		p.unacked++
		touched[p.id] = true
	}
	for i, p := range m.parts {
		if touched[i] && p.owner != nil {
			p.owner.fillLocked()
		}
	}
}

// search returns the index in the log of the record at offset, or where it
// would be, and whether it is there.
func (p *partition) search(offset int64) (int, bool) {
	return slices.BinarySearchFunc(p.log, offset, func(r *record, off int64) int { return cmp.Compare(r.msg.Offset, off) })
}

// find returns the record at offset, or nil when it is acked or unknown.
func (p *partition) find(offset int64) *record {
	i, ok := p.search(offset)
	if !ok || p.log[i].acked {
		return nil
	}
	return p.log[i]
}

// ackLocked acknowledges r. Acked records leave the log from its front;
// those behind an unacked one (the host acks in offset order, but a message
// may be stuck) are swept out once they are most of the log, so that the
// log stays proportional to what is unacked.
func (p *partition) ackLocked(r *record, forget bool) {
	r.acked, r.holder = true, nil
	p.unacked--
	p.stale++
	if !forget {
		p.acked = append(p.acked, r.msg.ID)
	}
	n := 0
	for n < len(p.log) && p.log[n].acked {
		p.log[n] = nil
		n++
	}
	p.log = p.log[n:]
	p.stale -= n
	if p.stale > 64 && p.stale > len(p.log)/2 {
		p.log = slices.DeleteFunc(p.log, func(r *record) bool { return r.acked })
		p.stale = 0
	}
}

// rebalanceLocked decides which member should own each partition (see
// Consumer), asks claims owned by any other consumer to stop, and claims
// every free partition for its member. The larger shares go to the members
// already holding the most, then the oldest, so that fewer partitions move.
func (m *Mailbox) rebalanceLocked() {
	n := len(m.members)
	if n == 0 {
		for _, p := range m.parts {
			p.target = nil
		}
	} else {
		for _, c := range m.members {
			c.share, c.count = 0, 0
		}
		for _, p := range m.parts {
			if p.target != nil && p.target.member {
				p.target.share++ // for now: how many it holds
			}
		}
		order := slices.Clone(m.members)
		slices.SortStableFunc(order, func(a, b *Consumer) int { return b.share - a.share })
		for i, c := range order {
			c.share = len(m.parts) / n
			if i < len(m.parts)%n {
				c.share++
			}
		}
		for _, p := range m.parts {
			if c := p.target; c != nil && c.member && c.count < c.share {
				c.count++
			} else {
				p.target = nil
			}
		}
		for _, p := range m.parts {
			if p.target != nil {
				continue
			}
			for _, c := range m.members {
				if c.count < c.share {
					p.target = c
					c.count++
					break
				}
			}
		}
	}
	for _, p := range m.parts {
		switch cl := p.owner; {
		case cl != nil && cl.state == stateActive && cl.c != p.target:
			cl.drainLocked()
		case cl == nil && p.target != nil && p.handoff == nil:
			p.target.grantLocked(p)
		}
	}
}
