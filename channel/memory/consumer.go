package memory

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/postbox-dev/postbox/channel"
)

// ErrCrashed is returned by the Run of a consumer that Crash ended.
var ErrCrashed = errors.New("memory: consumer crashed (test hook Consumer.Crash)")

// Consumer shares a Mailbox's partitions with the mailbox's other running
// consumers and hands each partition it comes to own to onClaim as a Claim.
//
// The split is fair, sticky and deterministic: with n consumers running,
// each owns floor(partitions/n) partitions or one more; a partition stays
// with its consumer while that consumer is within its share (the lowest
// partitions kept first), and the others go, lowest first, to the consumers
// with room, oldest first (by the order Mailbox.Consumer created them). A
// partition that must move is revoked from its owner, as by Revoke, and
// claimed by the next one once released.
type Consumer struct {
	m   *Mailbox
	seq int // creation order

	// Guarded by m.mu.
	started  bool
	running  bool // Run has started and not returned
	closed   bool
	crashed  bool
	member   bool // takes partitions: Run is running and not stopping
	onClaim  func(channel.Claim)
	stop     chan struct{} // closed to end Run
	stopped  bool
	done     chan struct{} // closed when Run returns
	handlers sync.WaitGroup
	// Scratch of rebalanceLocked.
	share, count int
}

var _ channel.Consumer = (*Consumer)(nil)

// Backend returns "memory".
func (c *Consumer) Backend() string { return Backend }

// Mailbox returns "memory:" and the mailbox's name.
func (c *Consumer) Mailbox() string { return "memory:" + c.m.Name() }

// Run implements channel.Consumer. It also stops when the Mailbox is
// closed, and returns ErrCrashed after Crash. A stopping claim's partition
// moves on as after Claim.Release, or once the claim is lost after
// Options.ReleaseTimeout.
func (c *Consumer) Run(ctx context.Context, onClaim func(channel.Claim)) error {
	if onClaim == nil {
		return errors.New("memory: Consumer.Run: onClaim is nil: pass a function that consumes the claim and releases it")
	}
	m := c.m
	m.mu.Lock()
	switch {
	case c.closed || m.closed:
		m.mu.Unlock()
		return fmt.Errorf("memory: consumer run: %w", channel.ErrClosed)
	case c.started:
		m.mu.Unlock()
		return errors.New("memory: Consumer.Run called twice: create a new Consumer to consume again")
	}
	c.started, c.running, c.member = true, true, true
	c.onClaim = onClaim
	c.stop, c.done = make(chan struct{}), make(chan struct{})
	i, _ := slices.BinarySearchFunc(m.members, c.seq, func(o *Consumer, seq int) int { return o.seq - seq })
	m.members = slices.Insert(m.members, i, c)
	m.running = append(m.running, c)
	m.runs.Add(1)
	m.rebalanceLocked()
	stop := c.stop
	m.mu.Unlock()
	defer m.runs.Done()

	select {
	case <-ctx.Done():
	case <-stop:
	}

	// Leave: the rebalance asks every claim of c to stop, and the others
	// take the partitions as they are released.
	m.mu.Lock()
	c.leaveLocked()
	m.rebalanceLocked()
	m.mu.Unlock()

	c.handlers.Wait()

	m.mu.Lock()
	defer m.mu.Unlock()
	c.running = false
	m.running = slices.DeleteFunc(m.running, func(o *Consumer) bool { return o == c })
	close(c.done)
	if c.crashed {
		return ErrCrashed
	}
	return nil
}

// Close implements channel.Consumer.
func (c *Consumer) Close() error {
	m := c.m
	m.mu.Lock()
	c.closed = true
	var done chan struct{}
	if c.running {
		c.signalStopLocked()
		done = c.done
	}
	m.mu.Unlock()
	if done != nil {
		<-done
	}
	return nil
}

// Crash is a test hook: the consumer dies, as its process would. Every
// claim it holds is lost at once (Lost and Messages close, later acks are
// ignored), it takes no new claims, and its partitions move to the other
// consumers at once. Its Run returns ErrCrashed once its onClaim calls have
// returned. Crash does not wait for that, so it may be called from onClaim.
// On a consumer that is not running, Crash only closes it.
func (c *Consumer) Crash() {
	m := c.m
	m.mu.Lock()
	defer m.mu.Unlock()
	c.closed = true
	if !c.running || c.crashed {
		return
	}
	c.crashed = true
	c.leaveLocked()
	for _, p := range m.parts {
		if cl := p.owner; cl != nil && cl.c == c {
			cl.endLocked(stateLost)
		}
		if cl := p.handoff; cl != nil && cl.c == c {
			p.handoff = nil
			cl.handoff.Stop()
		}
	}
	m.rebalanceLocked()
	c.signalStopLocked()
}

// leaveLocked stops c from taking partitions.
func (c *Consumer) leaveLocked() {
	if !c.member {
		return
	}
	c.member = false
	c.m.members = slices.DeleteFunc(c.m.members, func(o *Consumer) bool { return o == c })
}

// signalStopLocked asks Run to return.
func (c *Consumer) signalStopLocked() {
	if c.stop != nil && !c.stopped {
		c.stopped = true
		close(c.stop)
	}
}

// grantLocked makes c the owner of p and starts its onClaim.
func (c *Consumer) grantLocked(p *partition) {
	cl := newClaim(c, p)
	p.owner = cl
	c.handlers.Add(1)
	go c.serve(cl)
	cl.fillLocked()
}

// serve runs onClaim for cl, releases cl if onClaim did not, and lets the
// partition be claimed again.
func (c *Consumer) serve(cl *Claim) {
	defer c.handlers.Done()
	c.onClaim(cl)
	m := c.m
	m.mu.Lock()
	defer m.mu.Unlock()
	if cl.state == stateActive || cl.state == stateDraining {
		cl.endLocked(stateReleased)
		m.rebalanceLocked()
	}
	cl.endHandoffLocked()
}
