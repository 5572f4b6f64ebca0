package redis

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/postbox-dev/postbox/channel"
)

// Consumer shares a mailbox's shards with the other consumers of the same
// mailbox, in this process or others, and hands each shard it owns to its
// caller as a Claim.
//
// While Run runs, a lease keeper renews, every LeaseTTL/3 and in one
// script call, the consumer's heartbeat and the leases of its shards, takes
// free shards up to its fair share ceil(shards/live consumers), and asks
// claims beyond that share to stop. Each claim has a reader goroutine that
// first claims the shard's pending entries, then reads new ones, and a
// flusher sends the acks that no read carried within AckInterval.
type Consumer struct {
	m       *Mailbox
	opts    ConsumerOptions
	optsErr error

	runMu   sync.Mutex
	started bool
	closed  bool
	cancel  context.CancelFunc
	runDone chan struct{}

	// Lock order: Claim.releaseMu, Claim.flushMu, mu, Claim.mu.
	mu       sync.Mutex
	claims   map[int32]*Claim // claims holding a lease: active or draining
	stopping bool             // Run is draining: take no shards
	work     context.Context  // lives until the claims have drained
	handlers sync.WaitGroup   // onClaim calls; Add under mu while !stopping
	readers  sync.WaitGroup   // claim readers
	flushNow chan struct{}
}

var _ channel.Consumer = (*Consumer)(nil)

func newConsumer(m *Mailbox, opts ConsumerOptions) *Consumer {
	opts = opts.WithDefaults()
	return &Consumer{
		m:        m,
		opts:     opts,
		optsErr:  opts.validate(),
		claims:   make(map[int32]*Claim),
		flushNow: make(chan struct{}, 1),
	}
}

// Backend returns "redis".
func (c *Consumer) Backend() string { return Backend }

// Mailbox returns "redis:" and the mailbox's name.
func (c *Consumer) Mailbox() string { return "redis:" + c.m.Name() }

// Owner returns the name under which the consumer holds leases.
func (c *Consumer) Owner() string { return c.opts.Owner }

// Run takes part in sharing the mailbox's shards until ctx is cancelled,
// the Consumer or its Mailbox is closed, or Redis has failed the lease
// keeper for a whole LeaseTTL (by then every lease is lost anyway). It
// calls onClaim in a new goroutine for every shard the consumer comes to
// own.
//
// Stopping is graceful: Run closes the Messages channel of every claim,
// keeps their leases renewed and their acks flowing while the onClaim calls
// finish their work and Release, and returns once every onClaim call has
// returned. A claim that onClaim left unreleased is released then. So
// onClaim must return after Messages is closed, and must not wait for Run
// to return. Run returns nil when stopped by ctx or Close. A Consumer runs
// once; create another to run again.
func (c *Consumer) Run(ctx context.Context, onClaim func(channel.Claim)) error {
	if c.optsErr != nil {
		return c.optsErr
	}
	if onClaim == nil {
		return errors.New("redis: Consumer.Run: onClaim is nil: pass a function that consumes the claim and releases it")
	}
	c.runMu.Lock()
	switch {
	case c.closed:
		c.runMu.Unlock()
		return fmt.Errorf("redis: consumer run: %w", channel.ErrClosed)
	case c.started:
		c.runMu.Unlock()
		return errors.New("redis: Consumer.Run called twice: create a new Consumer to consume again")
	}
	c.m.mu.Lock()
	if c.m.closed {
		c.m.mu.Unlock()
		c.runMu.Unlock()
		return fmt.Errorf("redis: consumer run: %w", channel.ErrClosed)
	}
	c.m.runs.Add(1)
	c.m.mu.Unlock()
	defer c.m.runs.Done()

	// ctx ends the run; work keeps the keeper, the flusher and the readers
	// going until the claims have drained.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	work, stopWork := context.WithCancel(context.WithoutCancel(ctx))
	defer stopWork()
	c.started = true
	c.cancel = cancel
	c.runDone = make(chan struct{})
	defer close(c.runDone)
	c.mu.Lock()
	c.work = work
	c.mu.Unlock()
	c.runMu.Unlock()

	// Closing the Mailbox stops the run.
	go func() {
		select {
		case <-c.m.closing:
			cancel()
		case <-ctx.Done():
		}
	}()

	errc := make(chan error, 1)
	var wg sync.WaitGroup
	wg.Go(func() { errc <- c.keepLeases(work, onClaim) })
	wg.Go(func() { c.flushLoop(work) })
	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
	}

	// Drain: no new claims, no new deliveries; the onClaim calls finish.
	c.mu.Lock()
	c.stopping = true
	for _, cl := range c.claims {
		cl.mu.Lock()
		if cl.state == stateActive {
			cl.state = stateDraining
			cl.closeMessagesLocked()
		}
		cl.mu.Unlock()
		cl.kick()
	}
	c.mu.Unlock()
	c.handlers.Wait()

	cleanup, cancelCleanup := context.WithTimeout(context.WithoutCancel(ctx), c.opts.LeaseTTL)
	defer cancelCleanup()
	c.mu.Lock()
	left := make([]*Claim, 0, len(c.claims))
	for _, cl := range c.claims {
		left = append(left, cl)
	}
	c.mu.Unlock()
	for _, cl := range left {
		_ = cl.Release(cleanup) // best effort: an unreleased lease expires
	}
	stopWork()
	wg.Wait()
	c.readers.Wait()

	// Leave the heartbeat set so that the others count one consumer less
	// at once rather than after LeaseTTL.
	_ = c.m.client.ZRem(cleanup, c.m.consumersKey(), c.opts.Owner).Err()
	if err != nil {
		return fmt.Errorf("redis: consumer %s: %w", c.opts.Owner, err)
	}
	return nil
}

// Close stops Run, if it is running, and waits for it to return, so it
// must not be called from onClaim. Later calls to Run return
// channel.ErrClosed. Close is idempotent.
func (c *Consumer) Close() error {
	c.runMu.Lock()
	c.closed = true
	cancel, done := c.cancel, c.runDone
	c.runMu.Unlock()
	if cancel != nil {
		cancel()
		<-done
	}
	return nil
}

// keepLeases runs the lease keeper until ctx is done. Redis errors are
// retried every tick; once they have lasted a whole LeaseTTL it gives up.
func (c *Consumer) keepLeases(ctx context.Context, onClaim func(channel.Claim)) error {
	t := time.NewTimer(0)
	defer t.Stop()
	var failingSince time.Time
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if err := c.tickLeases(ctx, onClaim); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if failingSince.IsZero() {
				failingSince = time.Now()
			} else if time.Since(failingSince) >= c.opts.LeaseTTL {
				return err
			}
		} else {
			failingSince = time.Time{}
		}
		t.Reset(c.opts.LeaseTTL / 3)
	}
}

// tickLeases renews the heartbeat and the leases, takes free shards up to
// the fair share and stops claims beyond it, in one script call.
func (c *Consumer) tickLeases(ctx context.Context, onClaim func(channel.Claim)) error {
	c.mu.Lock()
	hold := make([]*Claim, 0, len(c.claims))
	for _, cl := range c.claims {
		hold = append(hold, cl)
	}
	stopping := c.stopping
	c.mu.Unlock()
	// Stop the highest shards first: deterministic, and it leaves the low
	// ones where they are.
	slices.SortFunc(hold, func(a, b *Claim) int { return int(a.partition - b.partition) })

	n := c.m.partitions
	keys := make([]string, 0, 2+n)
	keys = append(keys, c.m.consumersKey(), c.m.epochsKey())
	for p := range n {
		keys = append(keys, c.m.leaseKey(int32(p)))
	}
	take := "1"
	if stopping {
		take = "0"
	}
	args := make([]any, 0, 4+2*len(hold))
	args = append(args, c.opts.Owner, c.opts.LeaseTTL.Milliseconds(), take, len(hold))
	for _, cl := range hold {
		args = append(args, cl.partition, cl.lease)
	}
	sent := time.Now()
	res, err := leaseScript.Run(ctx, c.m.client, keys, args...).Slice()
	if err != nil {
		return fmt.Errorf("renew leases: %w", c.m.failed(err))
	}
	if len(res) != 3 {
		return fmt.Errorf("renew leases: unexpected reply %v", res)
	}
	live := max(toInt(res[0]), 1)
	target := (n + int(live) - 1) / int(live)
	lostSet := make(map[int32]bool)
	for _, p := range toSlice(res[1]) {
		lostSet[int32(toInt(p))] = true
	}
	taken := toSlice(res[2])

	var (
		stop   []*Claim
		active int
	)
	for _, cl := range hold {
		if lostSet[cl.partition] {
			cl.lose()
			continue
		}
		if cl.renewed(sent) {
			active++
			stop = append(stop, cl)
		}
	}
	if !stopping && active > target {
		for _, cl := range stop[len(stop)-(active-target):] {
			cl.drain()
		}
	}

	var started, giveBack []*Claim
	c.mu.Lock()
	for i := 0; i+1 < len(taken); i += 2 {
		cl := newClaim(c, int32(toInt(taken[i])), toInt(taken[i+1]), sent)
		if c.stopping {
			// Run began draining during the call.
			giveBack = append(giveBack, cl)
			continue
		}
		c.claims[cl.partition] = cl
		c.handlers.Add(1)
		c.readers.Add(1)
		started = append(started, cl)
	}
	work := c.work
	c.mu.Unlock()
	for _, cl := range started {
		go cl.read(work)
		go func() {
			defer c.handlers.Done()
			onClaim(cl)
		}()
	}
	for _, cl := range giveBack {
		cl.stopWatchdog()
		if _, err := ackScript.Run(ctx, c.m.client, cl.keys, cl.ackArgs(nil, nil, true)...).Result(); err != nil {
			return fmt.Errorf("give back shard %d taken while stopping: %w", cl.partition, c.m.failed(err))
		}
	}
	return nil
}

// forget removes cl from the consumer's claims.
func (c *Consumer) forget(cl *Claim) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.claims[cl.partition] == cl {
		delete(c.claims, cl.partition)
	}
}

// kickFlush wakes the flusher without blocking.
func (c *Consumer) kickFlush() {
	select {
	case c.flushNow <- struct{}{}:
	default:
	}
}

// flushLoop sends buffered acks and nacks every AckInterval, or at once
// when a claim has a batch of them, until ctx is done.
func (c *Consumer) flushLoop(ctx context.Context) {
	t := time.NewTicker(c.opts.AckInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-c.flushNow:
		}
		c.mu.Lock()
		todo := make([]*Claim, 0, len(c.claims))
		for _, cl := range c.claims {
			todo = append(todo, cl)
		}
		c.mu.Unlock()
		c.flushAll(ctx, todo)
	}
}

// flushAll sends the buffered acks and nacks of the claims in one
// pipeline: one round trip, and with appendfsync always one fsync, for all
// of them. A claim whose read or Release is sending its acks right now is
// skipped. A failed flush keeps its acks for the next one; a lost lease
// ends the claim.
func (c *Consumer) flushAll(ctx context.Context, claims []*Claim) {
	type batch struct {
		cl    *Claim
		acks  []string
		nacks []nackHint
		cmd   *redis.Cmd
	}
	var todo []batch
	for _, cl := range claims {
		if !cl.flushMu.TryLock() {
			continue
		}
		cl.mu.Lock()
		if (cl.state == stateActive || cl.state == stateDraining) && !cl.releasing && (len(cl.acks) > 0 || len(cl.nacks) > 0) {
			acks, nacks := cl.takeAcksLocked()
			todo = append(todo, batch{cl: cl, acks: acks, nacks: nacks})
		} else {
			cl.flushMu.Unlock()
		}
		cl.mu.Unlock()
	}
	if len(todo) == 0 {
		return
	}
	_, _ = c.m.client.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i := range todo {
			b := &todo[i]
			b.cmd = ackScript.EvalSha(ctx, p, b.cl.keys, b.cl.ackArgs(b.acks, b.nacks, false)...)
		}
		return nil
	})
	for _, b := range todo {
		res, err := b.cmd.Int64()
		if redis.HasErrorPrefix(err, "NOSCRIPT") {
			// The server lost its scripts (restart, SCRIPT FLUSH).
			res, err = ackScript.Run(ctx, c.m.client, b.cl.keys, b.cl.ackArgs(b.acks, b.nacks, false)...).Int64()
		}
		switch {
		case err != nil:
			b.cl.restoreAcks(b.acks, b.nacks)
		case res != 1:
			b.cl.lose()
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
