package lease

import (
	"fmt"
	"sync"
	"time"

	"github.com/postbox-dev/postbox/channel"
)

// state is where a claim is in its life.
type state uint8

const (
	// active: messages flow; Messages open.
	active state = iota
	// draining: asked to stop (rebalance, Run ending, Release); Messages
	// closed, the lease still held until Release.
	draining
	// lost: the lease was lost; Lost and Messages closed, acks ignored.
	lost
	// released: Release dropped the lease.
	released
)

// Slot is the part of a claim the engine keeps: the partition and epoch,
// the Messages and Lost channels, the state and the watchdog. Its mutex is
// the claim's mutex: a driver guards its own claim fields with Lock and
// Unlock too, and hands messages out only while Active, under the lock, so
// that no send races with the engine closing Messages.
type Slot struct {
	e         *Engine
	entry     *entry
	partition int32
	epoch     int64
	msgs      chan channel.Message
	lost      chan struct{}

	mu         sync.Mutex
	state      state
	releasing  bool // Release is dropping the lease: its loss is expected
	msgsClosed bool
	validUntil time.Time // by the local clock: the lease surely lasts until then
	watchdog   *time.Timer
}

func newSlot(e *Engine, h Held, validUntil time.Time) *Slot {
	return &Slot{e: e, partition: h.Partition, epoch: h.Epoch, validUntil: validUntil,
		msgs: make(chan channel.Message, e.cfg.Buffer), lost: make(chan struct{})}
}

// Partition returns the claimed partition.
func (s *Slot) Partition() int32 { return s.partition }

// Epoch returns the lease epoch.
func (s *Slot) Epoch() int64 { return s.epoch }

// Messages is the claim's Messages channel.
func (s *Slot) Messages() <-chan channel.Message { return s.msgs }

// Lost is the claim's Lost channel.
func (s *Slot) Lost() <-chan struct{} { return s.lost }

// Lock locks the claim.
func (s *Slot) Lock() { s.mu.Lock() }

// Unlock unlocks the claim.
func (s *Slot) Unlock() { s.mu.Unlock() }

// ActiveLocked reports whether messages may be handed out.
func (s *Slot) ActiveLocked() bool { return s.state == active }

// HoldsLocked reports whether the claim still holds its lease: active or
// draining, Release or not.
func (s *Slot) HoldsLocked() bool { return s.state == active || s.state == draining }

// ReleasingLocked reports whether Release is sending the claim's last acks
// and dropping its lease.
func (s *Slot) ReleasingLocked() bool { return s.releasing }

// PushLocked hands msg out. The caller holds the lock, checked ActiveLocked
// and reserved the room, so the send never blocks.
func (s *Slot) PushLocked(msg channel.Message) { s.msgs <- msg }

// AckableLocked is the check of Ack: ignore is true after the lease was
// lost (another consumer may have the partition), err is set after
// Release, or when msg is of another partition.
func (s *Slot) AckableLocked(msg channel.Message) (ignore bool, err error) {
	switch s.state {
	case lost:
		return true, nil
	case released:
		return true, fmt.Errorf("%s: %w", s.e.cfg.Backend, ErrReleased)
	}
	if msg.Partition != s.partition {
		return true, fmt.Errorf("%s: ack of message %s of partition %d on the claim of partition %d: ack it on its own claim",
			s.e.cfg.Backend, msg.ID, msg.Partition, s.partition)
	}
	return false, nil
}

// closeMessagesLocked closes Messages once.
func (s *Slot) closeMessagesLocked() {
	if !s.msgsClosed {
		s.msgsClosed = true
		close(s.msgs)
	}
}

// LoseLocked ends the claim after its lease was lost, unless it has ended
// already or is being released, and reports whether it did. The caller
// then drops what the claim buffered.
func (s *Slot) LoseLocked() bool {
	if !s.HoldsLocked() || s.releasing {
		return false
	}
	s.state = lost
	close(s.lost) // before Messages: a reader that sees Messages closed can tell a loss
	s.closeMessagesLocked()
	s.stopWatchdogLocked()
	s.e.forget(s)
	return true
}

// Lose is LoseLocked for a caller without the lock; it wakes the claim.
func (s *Slot) Lose() {
	s.e.lose(s.entry)
}

// BeginRelease starts Release: Messages closes and a loss of the lease
// from here on is expected. It reports false when the claim has ended
// already (lost or released), and Release has nothing to do.
func (s *Slot) BeginRelease() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.state == released || s.state == lost {
		return false
	}
	s.state = draining
	s.releasing = true
	s.closeMessagesLocked()
	return true
}

// EndRelease ends Release: after an error the claim stays draining, and
// Release may be called again; when the store said the lease was gone, the
// claim is lost; else it is released. It reports whether the claim has
// ended, so that the driver drops what it buffered.
func (s *Slot) EndRelease(err error, stillOurs bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.releasing = false
	switch {
	case err != nil:
		return false
	case !stillOurs:
		return s.LoseLocked()
	case s.state == draining:
		s.state = released
		s.stopWatchdogLocked()
		s.e.forget(s)
		return true
	}
	return false
}

// startWatchdog arms the local-clock expiry of the lease.
func (s *Slot) startWatchdog() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.state == active || s.state == draining {
		s.watchdog = time.AfterFunc(time.Until(s.validUntil), s.expire)
	}
}

func (s *Slot) stopWatchdogLocked() {
	if s.watchdog != nil {
		s.watchdog.Stop()
	}
}

// expire runs when the lease may have ended by the local clock without a
// renewal: the claim is lost before the store can give the partition to
// another consumer.
func (s *Slot) expire() {
	s.mu.Lock()
	if left := time.Until(s.validUntil); left > 0 {
		s.watchdog.Reset(left)
		s.mu.Unlock()
		return
	}
	ended := s.LoseLocked()
	s.mu.Unlock()
	if ended {
		s.entry.claim.Wake()
	}
}

// renewed records a renewal that makes the lease last until until, and
// reports whether the claim is active.
func (s *Slot) renewed(until time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.state != active && s.state != draining {
		return false
	}
	if until.After(s.validUntil) {
		s.validUntil = until
		if s.watchdog != nil {
			s.watchdog.Reset(time.Until(until))
		}
	}
	return s.state == active
}

// Room is how many more messages Messages has room for.
func (s *Slot) Room() int { return cap(s.msgs) - len(s.msgs) }
