package kafka

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/postbox-dev/postbox/channel"
)

// claimState is where a claim is in its life; it only moves forward.
type claimState int

const (
	stateActive   claimState = iota // delivering; acks are committed
	stateReleased                   // Release called; what was acked before may still be committed
	stateGone                       // revoked and handed over; nothing more is committed
	stateLost                       // taken away without a revocation; nothing more is committed
)

// claim is one assigned partition. The poll loop pushes fetched records:
// those on their home partition as messages, which the pump goroutine hands
// out in offset order; the foreign ones as records, which the forward
// goroutine republishes to their home partitions. The claim commits the
// lowest offset that is neither acked nor forwarded (commitPointLocked).
type claim struct {
	s         *session
	cl        *kgo.Client
	partition int32

	out      chan channel.Message
	lostCh   chan struct{} // closed on stateLost
	stop     chan struct{} // closed to end delivery; the pump then closes out
	wake     chan struct{} // buffered 1: there may be something to deliver
	released chan struct{} // closed once Release has tried to commit

	fwdWake chan struct{}      // buffered 1: there may be records to forward
	fwdDone chan struct{}      // closed when forward returns
	fwdCtx  context.Context    // bounds forwarding; ends with the claim
	fwdStop context.CancelFunc // ends fwdCtx

	stopOnce    sync.Once
	releaseMu   sync.Mutex // serializes Release calls
	releaseOnce sync.Once

	mu        sync.Mutex
	state     claimState
	stopped   bool              // delivery has ended
	pending   []channel.Message // fetched, not yet handed out; offset order
	toForward []*kgo.Record     // foreign, not yet taken by forward; offset order
	paused    bool              // fetching of the partition is paused
	committed int64             // offset last committed by this claim; -1 if none

	// The commit point: everything fetched that is in neither hostOpen nor
	// fwdOpen is done.
	acked    int64   // offset after the highest acked message; -1 if none
	hostOpen []int64 // offsets of fetched messages at or above acked
	fwdOpen  []int64 // offsets of fetched foreign records not yet forwarded
	first    int64   // offset of the first fetched record; -1 if none
	fetched  int64   // offset after the last fetched record; -1 if none
	// dropped is the offset of the first record fetched after delivery
	// stopped, which the claim dropped; -1 if none.
	dropped int64
}

var _ channel.Claim = (*claim)(nil)

// errReleased is returned by Ack after Release.
var errReleased = errors.New("kafka: claim already released: its unacked messages go to the partition's next owner; ack before Release")

func newClaim(s *session, cl *kgo.Client, partition int32) *claim {
	ctx, cancel := context.WithCancel(context.Background())
	return &claim{
		s:         s,
		cl:        cl,
		partition: partition,
		out:       make(chan channel.Message),
		lostCh:    make(chan struct{}),
		stop:      make(chan struct{}),
		wake:      make(chan struct{}, 1),
		released:  make(chan struct{}),
		fwdWake:   make(chan struct{}, 1),
		fwdDone:   make(chan struct{}),
		fwdCtx:    ctx,
		fwdStop:   cancel,
		acked:     -1,
		committed: -1,
		first:     -1,
		fetched:   -1,
		dropped:   -1,
	}
}

func (c *claim) Partition() int32                 { return c.partition }
func (c *claim) Messages() <-chan channel.Message { return c.out }
func (c *claim) Lost() <-chan struct{}            { return c.lostCh }

// push takes a fetch of the partition, in offset order: msgs to hand out,
// and foreign records to forward. It pauses fetching once the claim holds
// BufferSize of them.
func (c *claim) push(msgs []channel.Message, foreign []*kgo.Record) {
	lo, hi := int64(math.MaxInt64), int64(-1)
	for _, m := range msgs {
		lo, hi = min(lo, m.Offset), max(hi, m.Offset)
	}
	for _, r := range foreign {
		lo, hi = min(lo, r.Offset), max(hi, r.Offset)
	}
	if hi < 0 {
		return
	}
	c.mu.Lock()
	if c.state != stateActive || c.stopped {
		if c.dropped < 0 {
			c.dropped = lo
		}
		c.mu.Unlock()
		return
	}
	if c.first < 0 || lo < c.first {
		c.first = lo
	}
	c.fetched = max(c.fetched, hi+1)
	for _, m := range msgs {
		if m.Offset >= c.acked {
			c.hostOpen = insertOffset(c.hostOpen, m.Offset)
		}
	}
	for _, r := range foreign {
		c.fwdOpen = insertOffset(c.fwdOpen, r.Offset)
	}
	c.pending = append(c.pending, msgs...)
	c.toForward = append(c.toForward, foreign...)
	if !c.paused && len(c.pending)+len(c.toForward) >= c.s.opts.BufferSize {
		c.cl.PauseFetchPartitions(map[string][]int32{c.s.topic: {c.partition}})
		c.paused = true
	}
	c.mu.Unlock()
	if len(msgs) > 0 {
		signal(c.wake)
	}
	if len(foreign) > 0 {
		signal(c.fwdWake)
	}
}

// signal wakes whoever waits on ch, a channel buffered 1, without blocking.
func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// insertOffset adds off to the sorted offs. Fetches come in offset order, so
// this is an append but for a partition fetched again from an earlier offset.
func insertOffset(offs []int64, off int64) []int64 {
	if n := len(offs); n == 0 || offs[n-1] < off {
		return append(offs, off)
	}
	i, found := slices.BinarySearch(offs, off)
	if found {
		return offs
	}
	return slices.Insert(offs, i, off)
}

// resumeIfDrainedLocked resumes fetching once the claim holds no more than
// half of BufferSize.
func (c *claim) resumeIfDrainedLocked() {
	if c.paused && len(c.pending)+len(c.toForward) <= c.s.opts.BufferSize/2 {
		c.cl.ResumeFetchPartitions(map[string][]int32{c.s.topic: {c.partition}})
		c.paused = false
	}
}

// pump hands out messages on out until stop closes, then closes out.
func (c *claim) pump() {
	defer close(c.out)
	for {
		m, ok := c.next()
		if !ok {
			select {
			case <-c.wake:
				continue
			case <-c.stop:
				return
			}
		}
		select {
		case c.out <- m:
		case <-c.stop:
			return
		}
	}
}

// next takes the oldest fetched message not handed out yet.
func (c *claim) next() (channel.Message, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.pending) == 0 {
		return channel.Message{}, false
	}
	m := c.pending[0]
	c.pending[0] = channel.Message{} // let the GC have it
	c.pending = c.pending[1:]
	c.resumeIfDrainedLocked()
	return m, true
}

// stopDelivery ends delivery: the pump closes Messages. Buffered messages
// were never acked, so the next owner gets them again.
func (c *claim) stopDelivery() {
	c.mu.Lock()
	c.stopped = true // push stops pausing the partition
	c.mu.Unlock()
	c.stopOnce.Do(func() { close(c.stop) })
}

// setState moves the claim on. It never moves back, closes Lost on
// stateLost, and ends forwarding on stateGone and stateLost.
func (c *claim) setState(st claimState) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if st <= c.state || c.state == stateLost {
		return
	}
	c.state = st
	c.pending, c.toForward = nil, nil
	if st >= stateGone {
		c.fwdStop()
	}
	if st == stateLost {
		close(c.lostCh)
	}
}

// commitPointLocked is the offset the claim may commit: the lowest fetched
// offset neither acked nor forwarded, else the offset after the last
// record fetched or acked.
func (c *claim) commitPointLocked() int64 {
	p := max(c.fetched, c.acked)
	if len(c.hostOpen) > 0 {
		p = min(p, c.hostOpen[0])
	}
	if len(c.fwdOpen) > 0 {
		p = min(p, c.fwdOpen[0])
	}
	return p
}

// toCommit reports the offset to commit, if the claim may still commit and
// has finished records past what it committed.
func (c *claim) toCommit() (int64, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state != stateActive && c.state != stateReleased {
		return 0, false
	}
	p := c.commitPointLocked()
	return p, p > c.committed && p > c.first
}

// restartAt is where a new claim of the partition starts once this one was
// released while the partition stayed assigned: the commit point, or else
// the first record dropped since. ok is false when the claim has seen no
// record: the fetch position is then where the claim began.
func (c *claim) restartAt() (off int64, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.first >= 0 {
		return c.commitPointLocked(), true
	}
	return c.dropped, c.dropped >= 0
}

func (c *claim) committedUpTo(off int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.committed = max(c.committed, off)
}

// Ack implements channel.Claim: the commit point moves past msgs within
// Options.CommitInterval, or on Release. After Release it returns
// errReleased; after a revocation or Lost it is ignored.
func (c *claim) Ack(_ context.Context, msgs ...channel.Message) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, m := range msgs {
		if m.Partition != c.partition {
			return fmt.Errorf("kafka: ack of message %s of partition %d on the claim of partition %d: ack it on its own claim",
				m.ID, m.Partition, c.partition)
		}
	}
	switch c.state {
	case stateReleased:
		return errReleased
	case stateGone, stateLost:
		return nil
	}
	for _, m := range msgs {
		c.acked = max(c.acked, m.Offset+1)
	}
	i, _ := slices.BinarySearch(c.hostOpen, c.acked)
	c.hostOpen = c.hostOpen[i:]
	return nil
}

// Release implements channel.Claim: it stops delivery, waits (bounded by
// ctx) for a forward in flight, and commits. If the commit fails, it
// returns the error and may be called again; the revocation retries it
// too. Released while its partition stays assigned, the partition is
// claimed again: a new claim goes to onClaim, from the first unacked
// message.
func (c *claim) Release(ctx context.Context) error {
	c.releaseMu.Lock()
	defer c.releaseMu.Unlock()
	c.stopDelivery()
	select {
	case <-c.fwdDone:
	case <-ctx.Done():
	}
	c.setState(stateReleased)
	c.s.commitMu.Lock()
	err := c.s.commitLocked(ctx, []*claim{c})
	c.s.commitMu.Unlock()
	c.releaseOnce.Do(func() {
		close(c.released)
		c.s.reclaimLater(c)
	})
	return err
}
