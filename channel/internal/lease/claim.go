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

// Claim is a claim as the engine runs it, the channel.Claim onClaim gets:
// its state, its Messages and Lost channels, its watchdog and its messages
// in flight and acked. d is the driver's side of it.
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
func (s *Claim) Partition() int32 { return s.partition }

// Epoch returns the lease epoch: it grows every time the partition
// changes hands.
func (s *Claim) Epoch() int64 { return s.epoch }

// Messages implements channel.Claim.
func (s *Claim) Messages() <-chan channel.Message { return s.msgs }

// Lost implements channel.Claim.
func (s *Claim) Lost() <-chan struct{} { return s.lost }

func (s *Claim) holdsLocked() bool { return s.state == active || s.state == draining }

// Room is how many more messages the claim may hand out (Buffer bounds the
// messages in flight), and false once it is no longer active.
func (s *Claim) Room() (int, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.roomLocked(), s.state == active
}

func (s *Claim) roomLocked() int {
	if s.state != active {
		return 0
	}
	return min(s.e.cfg.Buffer-len(s.inflight), cap(s.msgs)-len(s.msgs))
}

// Take takes the acks to apply, and reports Room.
func (s *Claim) Take() (acks []Ref, room int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.takeAcksLocked(), s.roomLocked()
}

// Push hands msgs out, each in flight under the driver's ID for it (ids
// may be nil), unless the claim is no longer active; it reports whether it
// did. The room was reserved (Room, Take), so it never blocks.
func (s *Claim) Push(msgs []channel.Message, ids []string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.state != active {
		return false
	}
	for i, m := range msgs {
		if ids != nil {
			s.inflight[m.Offset] = ids[i]
		} else {
			s.inflight[m.Offset] = ""
		}
		s.msgs <- m
	}
	return true
}

// Ack implements channel.Claim: it moves msgs from in flight to the acks
// the driver applies next. After Lost it does nothing (another consumer
// may have the partition); after Release, or for a message of another
// partition, it fails.
func (s *Claim) Ack(_ context.Context, msgs ...channel.Message) error {
	full, batch, err := s.ack(msgs)
	if full { // its reader may go on now
		s.d.Wake()
	}
	if batch {
		s.e.d.Flush()
	}
	return err
}

// ack reports whether the claim had no room before and whether BatchSize
// acks are waiting.
func (s *Claim) ack(msgs []channel.Message) (full, batch bool, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	full = s.state == active && s.roomLocked() <= 0
	for _, m := range msgs {
		switch {
		case s.state == lost:
			return false, false, nil
		case s.state == released:
			return false, false, fmt.Errorf("%s: %w", s.e.cfg.Backend, ErrReleased)
		case m.Partition != s.partition:
			return false, false, fmt.Errorf("%s: ack of message %s of partition %d on the claim of partition %d: ack it on its own claim",
				s.e.cfg.Backend, m.ID, m.Partition, s.partition)
		}
		if id, ok := s.inflight[m.Offset]; ok {
			delete(s.inflight, m.Offset)
			s.acks = append(s.acks, Ref{m.Offset, id})
		}
	}
	return full, len(s.acks) >= s.e.cfg.BatchSize, nil
}

func (s *Claim) takeAcksLocked() []Ref {
	acks := s.acks
	s.acks = nil
	return acks
}

// RestoreAcks puts acks that could not be applied back in front, unless
// the claim has ended.
func (s *Claim) RestoreAcks(acks []Ref) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.restoreLocked(acks)
}

func (s *Claim) restoreLocked(acks []Ref) {
	if s.holdsLocked() {
		s.acks = append(acks, s.acks...)
	}
}

// setLocked moves the claim to st, closing Messages when it leaves active.
func (s *Claim) setLocked(st state) {
	if s.state == active {
		close(s.msgs)
	}
	s.state = st
}

// loseLocked ends the claim after its lease was lost, unless it has ended
// already or is being released, and reports whether it did.
func (s *Claim) loseLocked() bool {
	if !s.holdsLocked() || s.releasing {
		return false
	}
	close(s.lost) // before Messages: a reader that sees Messages closed can tell a loss
	s.setLocked(lost)
	s.endLocked()
	return true
}

// endLocked lets go of an ended claim: its buffers, watchdog and entry.
func (s *Claim) endLocked() {
	if s.watchdog != nil {
		s.watchdog.Stop()
	}
	s.inflight, s.acks = map[int64]string{}, nil
	s.e.forget(s)
}

// Lose ends the claim after the store said its lease is gone.
func (s *Claim) Lose() {
	s.mu.Lock()
	ended := s.loseLocked()
	s.mu.Unlock()
	if ended {
		s.d.Wake()
	}
}

// drain asks the claim to stop; it keeps its lease until Release.
func (s *Claim) drain() {
	s.mu.Lock()
	if s.state == active {
		s.setLocked(draining)
	}
	s.mu.Unlock()
	s.d.Wake()
}

// Release implements channel.Claim: the driver applies the acks and drops
// the lease (ClaimDriver.Release).
func (s *Claim) Release(ctx context.Context) error {
	s.releaseMu.Lock()
	defer s.releaseMu.Unlock()
	s.mu.Lock()
	ended := s.state == lost || s.state == released
	if !ended {
		s.setLocked(draining)
		s.releasing = true
	}
	s.mu.Unlock()
	if ended {
		return nil
	}
	s.d.Wake()
	var acks []Ref
	ours, err := s.d.Release(ctx, func() []Ref {
		s.mu.Lock()
		defer s.mu.Unlock()
		acks = s.takeAcksLocked()
		return acks
	})
	s.mu.Lock()
	s.releasing = false
	switch {
	case err != nil:
		s.restoreLocked(acks)
	case !ours:
		s.loseLocked()
	case s.state == draining:
		s.setLocked(released)
		s.endLocked()
	}
	s.mu.Unlock()
	s.d.Wake()
	if err != nil {
		return fmt.Errorf("%s: release partition %d: %w", s.e.cfg.Backend, s.partition, err)
	}
	return nil
}

// startWatchdog arms the local-clock expiry of the lease.
func (s *Claim) startWatchdog() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.holdsLocked() {
		s.watchdog = time.AfterFunc(time.Until(s.validUntil), s.expire)
	}
}

// expire loses the claim when, by the local clock, the lease may end
// without a renewal: before the store can give the partition to another.
func (s *Claim) expire() {
	s.mu.Lock()
	left := time.Until(s.validUntil)
	if left > 0 {
		s.watchdog.Reset(left)
	}
	ended := left <= 0 && s.loseLocked()
	s.mu.Unlock()
	if ended {
		s.d.Wake()
	}
}

// renewed records a renewal that makes the lease last until until, and
// reports whether the claim is active.
func (s *Claim) renewed(until time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.holdsLocked() {
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
