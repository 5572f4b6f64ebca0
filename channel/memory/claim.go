package memory

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"time"

	"github.com/postbox-dev/postbox/channel"
)

// claimState is where a claim is in its life.
type claimState uint8

const (
	// stateActive: Messages open, delivering.
	stateActive claimState = iota
	// stateDraining: Messages closed (rebalance, Revoke, Run stopping);
	// acks still count until Release or Options.ReleaseTimeout.
	stateDraining
	// stateLost: Lost and Messages closed; acks ignored.
	stateLost
	// stateReleased: Release was called, or onClaim returned.
	stateReleased
)

// errReleased is returned by Ack after Release.
var errReleased = errors.New("memory: claim already released: its unacked messages go to the partition's next claim; ack before Release")

// Claim is one partition owned by one Consumer for a while. Acks take
// effect at once: there is nothing to flush. A message counts as delivered,
// out with this claim, when it enters the Messages buffer (Options.Buffer).
type Claim struct {
	c    *Consumer
	p    *partition
	msgs chan channel.Message
	lost chan struct{}

	// Guarded by the mailbox's mu.
	state      claimState
	msgsClosed bool
	inflight   int         // messages out with this claim
	cursor     int64       // each message below this offset is acked or out with this claim
	bound      *time.Timer // loses a draining claim not released in time
	handoff    *time.Timer // ends the wait for onClaim to return after Release
}

var _ channel.Claim = (*Claim)(nil)

func newClaim(c *Consumer, p *partition) *Claim {
	return &Claim{
		c:    c,
		p:    p,
		msgs: make(chan channel.Message, c.m.opts.Buffer),
		lost: make(chan struct{}),
	}
}

// Partition returns the claimed partition.
func (cl *Claim) Partition() int32 { return cl.p.id }

// Messages implements channel.Claim: the unacked messages left by earlier
// claims, from the lowest offset, then new ones. Messages already buffered
// can still be read after it is closed.
func (cl *Claim) Messages() <-chan channel.Message { return cl.msgs }

// Lost implements channel.Claim: it is closed by Lose, Crash, or
// ReleaseTimeout passing after Messages closed.
func (cl *Claim) Lost() <-chan struct{} { return cl.lost }

// Ack implements channel.Claim. Acks of messages not out with this claim
// (already acked, or delivered by an earlier claim) are ignored too; after
// Release, Ack returns an error.
func (cl *Claim) Ack(_ context.Context, msgs ...channel.Message) error {
	m := cl.c.m
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, msg := range msgs {
		if msg.Partition != cl.p.id {
			return fmt.Errorf("memory: ack of message %s of partition %d on the claim of partition %d: ack it on its own claim", msg.ID, msg.Partition, cl.p.id)
		}
	}
	switch cl.state {
	case stateLost:
		return nil
	case stateReleased:
		return errReleased
	}
	for _, msg := range msgs {
		if r := cl.p.find(msg.Offset); r != nil && r.holder == cl && r.msg.ID == msg.ID {
			cl.p.ackLocked(r, m.opts.ForgetAcked)
			cl.inflight--
		}
	}
	cl.fillLocked()
	return nil
}

// Release implements channel.Claim. The partition is claimed again, also
// when nothing asked for the Release, by whichever consumer should own it
// now (this one, if nothing else changed): once this claim's onClaim
// returns, so that two onClaim calls never work on one partition, or after
// Options.ReleaseTimeout if it keeps running. After Lost, it does nothing.
func (cl *Claim) Release(_ context.Context) error {
	m := cl.c.m
	m.mu.Lock()
	defer m.mu.Unlock()
	if cl.state == stateLost || cl.state == stateReleased {
		return nil
	}
	cl.endLocked(stateReleased)
	cl.p.handoff = cl
	cl.handoff = time.AfterFunc(m.opts.ReleaseTimeout, func() {
		m.mu.Lock()
		defer m.mu.Unlock()
		cl.endHandoffLocked()
	})
	m.rebalanceLocked()
	return nil
}

// endHandoffLocked lets the partition of a released claim be claimed
// again: its onClaim returned, its consumer crashed, or the wait timed out.
func (cl *Claim) endHandoffLocked() {
	if cl.p.handoff != cl {
		return
	}
	cl.p.handoff = nil
	cl.handoff.Stop()
	cl.c.m.rebalanceLocked()
}

// drainLocked asks the owner to stop: Messages closes, and the claim is
// lost if it is not released within Options.ReleaseTimeout.
func (cl *Claim) drainLocked() {
	cl.state = stateDraining
	cl.closeMessagesLocked()
	cl.bound = time.AfterFunc(cl.c.m.opts.ReleaseTimeout, func() {
		m := cl.c.m
		m.mu.Lock()
		defer m.mu.Unlock()
		if cl.state == stateDraining {
			cl.endLocked(stateLost)
			m.rebalanceLocked()
		}
	})
}

// endLocked ends the claim as released or lost and frees its partition.
// The caller rebalances.
func (cl *Claim) endLocked(state claimState) {
	cl.state = state
	if state == stateLost {
		close(cl.lost) // before Messages: a reader that sees Messages closed can tell
	}
	cl.closeMessagesLocked()
	if cl.bound != nil {
		cl.bound.Stop()
	}
	for _, r := range cl.p.log {
		if r.holder == cl {
			r.holder = nil
		}
	}
	cl.inflight = 0
	if cl.p.owner == cl {
		cl.p.owner = nil
	}
}

func (cl *Claim) closeMessagesLocked() {
	if !cl.msgsClosed {
		cl.msgsClosed = true
		close(cl.msgs)
	}
}

// fillLocked hands out the messages not out yet, in offset order, until
// the buffer is full.
func (cl *Claim) fillLocked() {
	if cl.state != stateActive {
		return
	}
	log := cl.p.log
	i, _ := cl.p.search(cl.cursor)
	for ; i < len(log); i++ {
		if r := log[i]; !r.acked && r.holder != cl && !cl.sendLocked(r) {
			return // a full claim fills again on the acks that make room
		}
		cl.cursor = log[i].msg.Offset + 1
	}
}

// sendLocked puts r in the buffer, or reports that it is full.
func (cl *Claim) sendLocked(r *record) bool {
	if cl.inflight >= cap(cl.msgs) {
		return false
	}
	msg := r.msg
	msg.Payload = bytes.Clone(msg.Payload)
	msg.Headers = maps.Clone(msg.Headers)
	select {
	case cl.msgs <- msg:
	default: // only when messages not yet received were acked
		return false
	}
	r.holder = cl
	cl.inflight++
	return true
}
