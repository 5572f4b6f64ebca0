package lease

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/postbox-dev/postbox/channel"
)

// state is where a claim is in its life. Messages is open only while the
// claim is active.
type state uint8

const (
	active   state = iota
	draining       // asked to stop: the lease is held until Release
	lost           // the lease was lost: Lost closed, acks ignored
	released       // Release dropped the lease
)

// Claim is the channel.Claim onClaim gets: its state, channels, watchdog,
// and messages in flight and acked. d is the driver's side of it.
type Claim struct {
	e         *Engine
	d         ClaimDriver
	partition int32
	epoch     int64
	msgs      chan channel.Message
	lost      chan struct{}
	releaseMu sync.Mutex // serializes Release calls

	mu         sync.Mutex
	state      state
	releasing  bool      // Release is dropping the lease: its loss is expected
	validUntil time.Time // by the local clock: the lease surely lasts until then
	watchdog   *time.Timer
	inflight   map[int64]string // handed out, not acked: offset -> the driver's ID
	acks       []Ref            // acked, not yet applied
}

// Ref is an acked message the driver has yet to apply: its offset and the
// driver's ID for it ("" where the offset is enough).
type Ref struct {
	Offset int64
	ID     string
}

var _ channel.Claim = (*Claim)(nil)

func newClaim(e *Engine, h Held, validUntil time.Time) *Claim {
	return &Claim{e: e, partition: h.Partition, epoch: h.Epoch, validUntil: validUntil,
		msgs: make(chan channel.Message, e.cfg.Buffer), lost: make(chan struct{}), inflight: make(map[int64]string)}
}

// Partition implements channel.Claim.
func (c *Claim) Partition() int32 { return c.partition }

// Epoch returns the lease epoch: it grows every time the partition
// changes hands.
func (c *Claim) Epoch() int64 { return c.epoch }

// Messages implements channel.Claim.
func (c *Claim) Messages() <-chan channel.Message { return c.msgs }

// Lost implements channel.Claim.
func (c *Claim) Lost() <-chan struct{} { return c.lost }

func (c *Claim) holdsLocked() bool { return c.state == active || c.state == draining }

// Room is how many more messages the claim may hand out (Buffer bounds the
// messages in flight), and false once it is no longer active.
func (c *Claim) Room() (int, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.roomLocked(), c.state == active
}

func (c *Claim) roomLocked() int {
	if c.state != active {
		return 0
	}
	return min(c.e.cfg.Buffer-len(c.inflight), cap(c.msgs)-len(c.msgs))
}

// Take takes the acks to apply, and reports Room.
func (c *Claim) Take() (acks []Ref, room int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	acks, c.acks = c.acks, nil
	return acks, c.roomLocked()
}

// Push hands msgs out, each in flight under the driver's ID for it (ids
// may be nil), unless the claim is no longer active; it reports whether it
// did. The room was reserved (Room, Take), so it never blocks.
func (c *Claim) Push(msgs []channel.Message, ids []string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state != active {
		return false
	}
	for i, m := range msgs {
		if ids != nil {
			c.inflight[m.Offset] = ids[i]
		} else {
			c.inflight[m.Offset] = ""
		}
		c.msgs <- m
	}
	return true
}

// Ack implements channel.Claim: it moves msgs from in flight to the acks
// the driver applies next. After Lost it does nothing (another consumer
// may have the partition); after Release, or for a message of another
// partition, it fails.
func (c *Claim) Ack(_ context.Context, msgs ...channel.Message) error {
	full, batch, err := c.ack(msgs)
	if full { // its reader may go on now
		c.d.Wake()
	}
	if batch {
		c.e.d.Flush()
	}
	return err
}

// ack reports whether the claim had no room before and whether BatchSize
// acks are waiting.
func (c *Claim) ack(msgs []channel.Message) (full, batch bool, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	full = c.state == active && c.roomLocked() <= 0
	for _, m := range msgs {
		switch {
		case c.state == lost:
			return false, false, nil
		case c.state == released:
			return false, false, fmt.Errorf("%s: %w", c.e.cfg.Backend, ErrReleased)
		case m.Partition != c.partition:
			return false, false, fmt.Errorf("%s: ack of message %s of partition %d on the claim of partition %d: ack it on its own claim",
				c.e.cfg.Backend, m.ID, m.Partition, c.partition)
		}
		if id, ok := c.inflight[m.Offset]; ok {
			delete(c.inflight, m.Offset)
			c.acks = append(c.acks, Ref{m.Offset, id})
		}
	}
	return full, len(c.acks) >= c.e.cfg.BatchSize, nil
}

// RestoreAcks puts acks that could not be applied back in front, unless
// the claim has ended.
func (c *Claim) RestoreAcks(acks []Ref) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.restoreLocked(acks)
}

func (c *Claim) restoreLocked(acks []Ref) {
	if c.holdsLocked() {
		c.acks = append(acks, c.acks...)
	}
}

// setLocked moves the claim to st, closing Messages when it leaves active.
func (c *Claim) setLocked(st state) {
	if c.state == active {
		close(c.msgs)
	}
	c.state = st
}

// loseLocked ends the claim after its lease was lost, unless it has ended
// already or is being released, and reports whether it did.
func (c *Claim) loseLocked() bool {
	if !c.holdsLocked() || c.releasing {
		return false
	}
	close(c.lost) // before Messages: a reader that sees Messages closed can tell a loss
	c.setLocked(lost)
	c.endLocked()
	return true
}

// endLocked lets go of an ended claim: its buffers, watchdog and entry.
func (c *Claim) endLocked() {
	if c.watchdog != nil {
		c.watchdog.Stop()
	}
	c.inflight, c.acks = map[int64]string{}, nil
	c.e.forget(c)
}

// Lose ends the claim after the store said its lease is gone.
func (c *Claim) Lose() {
	c.mu.Lock()
	ended := c.loseLocked()
	c.mu.Unlock()
	if ended {
		c.d.Wake()
	}
}

// drain asks the claim to stop; it keeps its lease until Release.
func (c *Claim) drain() {
	c.mu.Lock()
	if c.state == active {
		c.setLocked(draining)
	}
	c.mu.Unlock()
	c.d.Wake()
}

// Release implements channel.Claim with ClaimDriver.Release.
func (c *Claim) Release(ctx context.Context) error {
	c.releaseMu.Lock()
	defer c.releaseMu.Unlock()
	c.mu.Lock()
	ended := c.state == lost || c.state == released
	if !ended {
		c.setLocked(draining)
		c.releasing = true
	}
	c.mu.Unlock()
	if ended {
		return nil
	}
	c.d.Wake()
	var acks []Ref
	ours, err := c.d.Release(ctx, func() []Ref {
		c.mu.Lock()
		defer c.mu.Unlock()
		acks, c.acks = c.acks, nil
		return acks
	})
	c.mu.Lock()
	c.releasing = false
	switch {
	case err != nil:
		c.restoreLocked(acks)
	case !ours:
		c.loseLocked()
	case c.state == draining:
		c.setLocked(released)
		c.endLocked()
	}
	c.mu.Unlock()
	c.d.Wake()
	if err != nil {
		return fmt.Errorf("%s: release partition %d: %w", c.e.cfg.Backend, c.partition, err)
	}
	return nil
}

// startWatchdog arms the local-clock expiry of the lease.
func (c *Claim) startWatchdog() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.holdsLocked() {
		c.watchdog = time.AfterFunc(time.Until(c.validUntil), c.expire)
	}
}

// expire loses the claim when, by the local clock, the lease may end
// without a renewal: before the store can give the partition to another.
func (c *Claim) expire() {
	c.mu.Lock()
	left := time.Until(c.validUntil)
	if left > 0 {
		c.watchdog.Reset(left)
	}
	ended := left <= 0 && c.loseLocked()
	c.mu.Unlock()
	if ended {
		c.d.Wake()
	}
}

// renewed records a renewal that makes the lease last until until, and
// reports whether the claim is active.
func (c *Claim) renewed(until time.Time) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.holdsLocked() {
		return false
	}
	if until.After(c.validUntil) {
		c.validUntil = until
		if c.watchdog != nil {
			c.watchdog.Reset(time.Until(until))
		}
	}
	return c.state == active
}
