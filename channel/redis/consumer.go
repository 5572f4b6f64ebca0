package redis

import (
	"context"
	"fmt"
	"strconv"
	"sync"

	"github.com/redis/go-redis/v9"

	"github.com/postbox-dev/postbox/channel/internal/lease"
)

// consumer is the driver under a Mailbox's consumers (see Mailbox.Consumer).
type consumer struct {
	m      *Mailbox
	opts   ConsumerOptions
	engine *lease.Engine

	// Lock order: claim.flushMu, the claim's lock.
	readers  sync.WaitGroup // claim readers
	flushNow chan struct{}
}

func newConsumer(m *Mailbox, opts ConsumerOptions) *lease.Engine {
	opts = opts.WithDefaults()
	c := &consumer{m: m, opts: opts, flushNow: make(chan struct{}, 1)}
	c.engine = lease.New(lease.Config{Backend: Backend, Mailbox: "redis:" + m.name, Owner: opts.Owner, LeaseTTL: opts.LeaseTTL,
		BatchSize: opts.BatchSize, Buffer: opts.Buffer, Partitions: m.partitions, Err: opts.validate(), Attach: m.runs.Attach}, c)
	return c.engine
}

// Tick is the lease keeper's script call (see lease.Driver).
func (c *consumer) Tick(ctx context.Context, held []lease.Held, take bool) (lease.TickResult, error) {
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

// NewClaim makes the reader of a claim the keeper took.
func (c *consumer) NewClaim(s *lease.Claim) lease.ClaimDriver {
	return &claim{c: c, s: s, partition: s.Partition(), lease: leaseValue(s.Epoch(), c.opts.Owner),
		keys: c.m.partitionKeys(s.Partition()), wake: make(chan struct{}, 1)}
}

// Flush wakes the ack flusher.
func (c *consumer) Flush() { lease.Kick(c.flushNow) }

// Work runs the ack flusher, every AckInterval or when a claim has a batch
// of acks, then waits for the claims' readers.
func (c *consumer) Work(ctx context.Context) error {
	_ = lease.Every(ctx, c.opts.AckInterval, c.flushNow, func() (bool, error) {
		c.flushAll(ctx, lease.Claims[*claim](c.engine))
		return false, nil
	})
	c.readers.Wait()
	return nil
}

// flushAll sends the buffered acks of the claims in one pipeline: one
// round trip, and with appendfsync always one fsync, for all of them. A
// claim whose read or Release is sending acks right now is skipped.
func (c *consumer) flushAll(ctx context.Context, claims []*claim) {
	type batch struct {
		cl   *claim
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
