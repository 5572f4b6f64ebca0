package lease

import (
	"context"
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
// the Messages and Lost channels, the state, the watchdog and the messages
// in flight and acked. Its mutex is the claim's mutex: a driver guards its
// own claim fields with Lock and Unlock too, and hands messages out only
// while Active, under the lock, so that no send races with the engine
// closing Messages.
type Slot struct {
	e         *Engine
	entry     *entry
	partition int32
	epoch     int64
	msgs      chan channel.Message
	lost      chan struct{}
	releaseMu sync.Mutex // serializes Release calls

	mu         sync.Mutex
	state      state
	releasing  bool // Release is dropping the lease: its loss is expected
	msgsClosed bool
	validUntil time.Time // by the local clock: the lease surely lasts until then
	watchdog   *time.Timer
	inflight   map[int64]string // handed out, not acked: offset -> the driver's ID
	acks       []Ref            // acked, not yet applied
}

// Ref is an acked message the driver has yet to apply: its offset and the
// driver's own ID for it (a stream entry ID; "" where the offset is enough).
type Ref struct {
	Offset int64
	ID     string
}

func newSlot(e *Engine, h Held, validUntil time.Time) *Slot {
	return &Slot{e: e, partition: h.Partition, epoch: h.Epoch, validUntil: validUntil,
		msgs: make(chan channel.Message, e.cfg.Buffer), lost: make(chan struct{}), inflight: make(map[int64]string)}
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

// PushLocked hands msg out, in flight under the driver's id. The caller
// holds the lock, checked ActiveLocked and RoomLocked, so the send never
// blocks.
func (s *Slot) PushLocked(msg channel.Message, id string) {
	s.inflight[msg.Offset] = id
	s.msgs <- msg
}

// RoomLocked is how many more messages may be handed out: Buffer bounds
// the messages in flight.
func (s *Slot) RoomLocked() int {
	return min(s.e.cfg.Buffer-len(s.inflight), cap(s.msgs)-len(s.msgs))
}

// Ack is a claim's Ack: it moves msgs from in flight to the acks the driver
// applies next. After Lost it does nothing; after Release, or for a message
// of another partition, it fails; a message not in flight is skipped. full
// reports that the claim had no room before (its reader may go on now),
// batch that BatchSize acks are waiting.
func (s *Slot) Ack(msgs []channel.Message) (full, batch bool, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	full = s.RoomLocked() <= 0
	for _, m := range msgs {
		if ignore, err := s.ackableLocked(m); ignore {
			return false, false, err
		}
		if id, ok := s.inflight[m.Offset]; ok {
			delete(s.inflight, m.Offset)
			s.acks = append(s.acks, Ref{m.Offset, id})
		}
	}
	return full, len(s.acks) >= s.e.cfg.BatchSize, nil
}

// TakeAcksLocked takes the acks to apply.
func (s *Slot) TakeAcksLocked() []Ref {
	acks := s.acks
	s.acks = nil
	return acks
}

// RestoreAcks puts acks that could not be applied back in front, unless
// the claim has ended.
func (s *Slot) RestoreAcks(acks []Ref) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.HoldsLocked() {
		s.acks = append(acks, s.acks...)
	}
}

// ackableLocked is the check of Ack: ignore is true after the lease was
// lost (another consumer may have the partition), err is set after
// Release, or when msg is of another partition.
func (s *Slot) ackableLocked(msg channel.Message) (ignore bool, err error) {
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

// loseLocked ends the claim after its lease was lost, unless it has ended
// already or is being released, and reports whether it did.
func (s *Slot) loseLocked() bool {
	if !s.HoldsLocked() || s.releasing {
		return false
	}
	s.state = lost
	close(s.lost) // before Messages: a reader that sees Messages closed can tell a loss
	s.endLocked()
	return true
}

// endLocked lets go of an ended claim: its buffers, watchdog and entry.
func (s *Slot) endLocked() {
	s.closeMessagesLocked()
	s.stopWatchdogLocked()
	s.inflight, s.acks = map[int64]string{}, nil
	s.e.forget(s)
}

// Lose ends the claim after the store said its lease is gone, and wakes it.
func (s *Slot) Lose() {
	s.e.lose(s.entry)
}

// Release is a claim's Release. Messages closes; apply calls take for the
// acks to apply, makes them durable and drops the lease, and reports
// whether the lease was still the claim's (else the claim is lost). After
// an error the acks are kept and Release may be called again. On an ended
// claim it does nothing.
func (s *Slot) Release(ctx context.Context, apply func(ctx context.Context, take func() []Ref) (stillOurs bool, err error)) error {
	s.releaseMu.Lock()
	defer s.releaseMu.Unlock()
	if !s.beginRelease() {
		return nil
	}
	s.entry.claim.Wake()
	var acks []Ref
	ours, err := apply(ctx, func() []Ref {
		s.mu.Lock()
		defer s.mu.Unlock()
		acks = s.TakeAcksLocked()
		return acks
	})
	if err != nil {
		s.RestoreAcks(acks)
	}
	s.endRelease(err, ours)
	s.entry.claim.Wake()
	if err != nil {
		return fmt.Errorf("%s: release partition %d: %w", s.e.cfg.Backend, s.partition, err)
	}
	return nil
}

// beginRelease starts Release: Messages closes and a loss of the lease
// from here on is expected. It reports false when the claim has ended
// already (lost or released), and Release has nothing to do.
func (s *Slot) beginRelease() bool {
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

// endRelease ends Release: after an error the claim stays draining, and
// Release may be called again; when the store said the lease was gone, the
// claim is lost; else it is released.
func (s *Slot) endRelease(err error, stillOurs bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.releasing = false
	switch {
	case err != nil:
	case !stillOurs:
		s.loseLocked()
	case s.state == draining:
		s.state = released
		s.endLocked()
	}
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
	ended := s.loseLocked()
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
