package redis

import (
	"context"
	"fmt"
	"strconv"
	"sync"

	"github.com/redis/go-redis/v9"

	"github.com/postbox-dev/postbox/channel"
	"github.com/postbox-dev/postbox/channel/internal/lease"
)

// Consumer shares a mailbox's partitions (one stream each) with the other
// consumers of the same mailbox, in this process or others; its lease
// keeper runs one script call per tick. Each claim has a reader goroutine;
// a flusher sends the acks that no read carried within AckInterval. A
// Redis that is away (restarting, loading its dataset) loses the consumer
// its claims but does not end Run.
type Consumer struct {
	m      *Mailbox
	opts   ConsumerOptions
	engine *lease.Engine

	// Lock order: Claim.flushMu, the claim's lock.
	readers  sync.WaitGroup // claim readers
	flushNow chan struct{}
}

var _ channel.Consumer = (*Consumer)(nil)

func newConsumer(m *Mailbox, opts ConsumerOptions) *Consumer {
	opts = opts.WithDefaults()
	c := &Consumer{m: m, opts: opts, flushNow: make(chan struct{}, 1)}
	c.engine = lease.New(lease.Config{Options: opts.common(), Err: opts.validate(), Backend: Backend,
		Partitions: m.partitions, Attach: m.runs.Attach}, c)
	return c
}

// Backend returns "redis".
func (c *Consumer) Backend() string { return Backend }

// Mailbox returns "redis:" and the mailbox's name.
func (c *Consumer) Mailbox() string { return "redis:" + c.m.Name() }

// Owner returns the name under which the consumer holds leases.
func (c *Consumer) Owner() string { return c.opts.Owner }

// Run implements channel.Consumer. It also stops when the Mailbox is
// closed.
func (c *Consumer) Run(ctx context.Context, onClaim func(channel.Claim)) error {
	return c.engine.Run(ctx, onClaim)
}

// Close implements channel.Consumer.
func (c *Consumer) Close() error { return c.engine.Close() }

// Tick is the lease keeper's script call (see lease.Driver).
func (c *Consumer) Tick(ctx context.Context, held []lease.Held, take bool) (lease.TickResult, error) {
	n := c.m.partitions
	keys := make([]string, 0, 2+n)
	keys = append(keys, c.m.consumersKey(), c.m.epochsKey())
	for p := range n {
		keys = append(keys, c.m.leaseKey(int32(p)))
	}
	args := make([]any, 0, 4+2*len(held))
	args = append(args, c.opts.Owner, c.opts.LeaseTTL.Milliseconds(), take, len(held))
	for _, h := range held {
		args = append(args, h.Partition, leaseValue(h.Epoch, c.opts.Owner))
	}
	res, err := leaseScript.Run(ctx, c.m.client, keys, args...).Slice()
	if err != nil {
		return lease.TickResult{}, c.m.failed(err)
	}
	if len(res) != 3 {
		return lease.TickResult{}, fmt.Errorf("unexpected reply %v", res)
	}
	out := lease.TickResult{Live: int(toInt(res[0]))}
	for _, p := range toSlice(res[1]) {
		out.Lost = append(out.Lost, int32(toInt(p)))
	}
	taken := toSlice(res[2])
	for i := 0; i+1 < len(taken); i += 2 {
		out.Taken = append(out.Taken, lease.Held{Partition: int32(toInt(taken[i])), Epoch: toInt(taken[i+1])})
	}
	return out, nil
}

// GiveBack drops leases taken while Run began to drain.
func (c *Consumer) GiveBack(ctx context.Context, taken []lease.Held) error {
	for _, h := range taken {
		args := ackArgs(leaseValue(h.Epoch, c.opts.Owner), nil, true)
		if err := ackScript.Run(ctx, c.m.client, c.m.partitionKeys(h.Partition), args...).Err(); err != nil {
			return fmt.Errorf("partition %d: %w", h.Partition, c.m.failed(err))
		}
	}
	return nil
}

// NewClaim makes the claim of a partition the keeper took.
func (c *Consumer) NewClaim(s *lease.Slot) lease.Claim { return newClaim(c, s) }

// Work runs the ack flusher, every AckInterval or when a claim has a batch
// of acks, then waits for the claims' readers.
func (c *Consumer) Work(ctx context.Context) error {
	_ = lease.Every(ctx, c.opts.AckInterval, c.flushNow, func() (bool, error) {
		c.flushAll(ctx, lease.Claims[*Claim](c.engine))
		return false, nil
	})
	c.readers.Wait()
	return nil
}

// flushAll sends the buffered acks of the claims in one pipeline: one
// round trip, and with appendfsync always one fsync, for all of them. A
// claim whose read or Release is sending acks right now is skipped.
func (c *Consumer) flushAll(ctx context.Context, claims []*Claim) {
	type batch struct {
		cl   *Claim
		acks []lease.Ref
		cmd  *redis.Cmd
	}
	var todo []batch
	for _, cl := range claims {
		if !cl.flushMu.TryLock() {
			continue
		}
		if acks, _ := cl.s.Take(); len(acks) > 0 {
			todo = append(todo, batch{cl: cl, acks: acks})
		} else {
			cl.flushMu.Unlock()
		}
	}
	if len(todo) == 0 {
		return
	}
	_, _ = c.m.client.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i := range todo {
			b := &todo[i]
			b.cmd = ackScript.EvalSha(ctx, p, b.cl.keys, ackArgs(b.cl.lease, b.acks, false)...)
		}
		return nil
	})
	for _, b := range todo {
		res, err := b.cmd.Int64()
		if redis.HasErrorPrefix(err, "NOSCRIPT") {
			// The server lost its scripts (restart, SCRIPT FLUSH).
			res, err = ackScript.Run(ctx, c.m.client, b.cl.keys, ackArgs(b.cl.lease, b.acks, false)...).Int64()
		}
		switch {
		case err != nil:
			b.cl.s.RestoreAcks(b.acks)
		case res != 1:
			b.cl.s.Lose()
		}
		b.cl.flushMu.Unlock()
	}
}

// toInt reads an integer of a script reply.
func toInt(v any) int64 {
	switch x := v.(type) {
	case int64:
		return x
	case string:
		n, _ := strconv.ParseInt(x, 10, 64)
		return n
	}
	return 0
}

// toSlice reads an array of a script reply.
func toSlice(v any) []any {
	s, _ := v.([]any)
	return s
}
