// Claims: the host's side of a channel.Claim, from taking the partition
// (its journal epoch) to giving it up, or ending it when the journal
// refuses its writes.

package actorhost

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/postbox-dev/postbox/channel"
	"github.com/postbox-dev/postbox/journal"
	"go.uber.org/zap"
)

// claimState is the host's side of one channel.Claim.
type claimState struct {
	claim    channel.Claim
	key      string // journal partition
	epoch    int64
	ctx      context.Context // ends when lost, fenced or hard-stopped
	cancel   context.CancelFunc
	stopping chan struct{} // closed: abandon queued work
	ended    chan struct{}

	room     chan struct{} // signalled when the watermark moves
	mu       sync.Mutex
	inflight []*delivery // in offset order
	fenced   bool
	lost     bool
	since    time.Time // when the epoch was taken; zero before
	wg       sync.WaitGroup
	stopOnce sync.Once
	horizon  horizon
}

func (cs *claimState) isStopping() bool {
	select {
	case <-cs.stopping:
		return true
	default:
		return false
	}
}

// window is how many messages are taken and not yet acked.
func (cs *claimState) window() int {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	return len(cs.inflight)
}

func (cs *claimState) beginStop() { cs.stopOnce.Do(func() { close(cs.stopping) }) }

// PartitionClaim is one partition a host holds, as Host.Claims reports it.
type PartitionClaim struct {
	Partition int32     `json:"partition"`
	Epoch     int64     `json:"epoch"`     // the journal epoch taken for it
	Since     time.Time `json:"since"`     // when the epoch was taken
	InFlight  int       `json:"in_flight"` // messages taken and not yet acked
	Stopping  bool      `json:"stopping"`  // being given up: finishing its in-flight work
}

// Claims lists the partitions the host holds, by number: each claim whose
// journal epoch is taken and that is neither lost nor fenced. Operators
// and tests read ownership here (the worker serves it as GET /partitions)
// rather than from logs.
func (h *Host) Claims() []PartitionClaim {
	h.mu.Lock()
	states := make([]*claimState, 0, len(h.claims))
	for _, cs := range h.claims {
		states = append(states, cs)
	}
	h.mu.Unlock()
	out := make([]PartitionClaim, 0, len(states))
	for _, cs := range states {
		cs.mu.Lock()
		if !cs.since.IsZero() && !cs.lost && !cs.fenced {
			out = append(out, PartitionClaim{Partition: cs.claim.Partition(), Epoch: cs.epoch, Since: cs.since,
				InFlight: len(cs.inflight), Stopping: cs.isStopping()})
		}
		cs.mu.Unlock()
	}
	slices.SortFunc(out, func(a, b PartitionClaim) int { return int(a.Partition) - int(b.Partition) })
	return out
}

// partitionKey names a partition in the journal: the mailbox's own
// identity (channel.Consumer.Mailbox) and the partition number.
func (h *Host) partitionKey(p int32) string { return fmt.Sprintf("%s/%d", h.mailbox, p) }

func (h *Host) onClaim(c channel.Claim) {
	// A counter under mu rather than a WaitGroup: consumers call onClaim
	// from their own goroutines, possibly while Stop is waiting.
	h.mu.Lock()
	h.claimsRunning++
	h.mu.Unlock()
	defer func() {
		h.mu.Lock()
		if h.claimsRunning--; h.claimsRunning == 0 {
			h.claimsIdle.Broadcast()
		}
		h.mu.Unlock()
	}()
	ctx, cancel := context.WithCancel(h.hardCtx)
	cs := &claimState{claim: c, key: h.partitionKey(c.Partition()), ctx: ctx, cancel: cancel,
		stopping: make(chan struct{}), ended: make(chan struct{}), room: make(chan struct{}, 1)}
	defer cancel()
	log := h.log.With(zap.Int32("partition", c.Partition()))

	h.mu.Lock()
	prev := h.claims[c.Partition()]
	h.claims[c.Partition()] = cs
	h.mu.Unlock()
	if prev != nil {
		select {
		case <-prev.ended:
		case <-ctx.Done():
		}
	}
	if err := h.acquire(cs, log); err != nil {
		log.Warn("could not take the partition's epoch; giving the partition back", zap.Error(err))
		h.endClaim(cs, log)
		return
	}
	cs.mu.Lock()
	cs.since = time.Now()
	cs.mu.Unlock()
	h.mu.Lock()
	h.owners[batchKey(cs.key, cs.epoch)] = cs
	h.mu.Unlock()
	log.Info("partition claimed", zap.Int64("epoch", cs.epoch))
	h.m.claimed.Add(1)
	defer h.m.claimed.Add(-1)
	lose := func() {
		cs.mu.Lock()
		cs.lost = true
		cs.mu.Unlock()
		cs.cancel()
		log.Warn("partition lost: abandoning its in-flight work")
	}
loop:
	for {
		if cs.window() >= h.cfg.MaxInFlight {
			// Backpressure: take nothing more until the watermark moves.
			select {
			case <-cs.room:
				continue
			case <-c.Lost():
				lose()
				break loop
			case <-ctx.Done():
				break loop
			}
		}
		select {
		case msg, ok := <-c.Messages():
			if !ok {
				select {
				case <-c.Lost(): // closed together with Messages: a loss, not a release
					lose()
				default:
				}
				break loop
			}
			first, err := h.firstDelivery(cs, msg.Offset)
			if err != nil {
				log.Warn("could not journal the partition's horizon; giving the partition back", zap.Error(err))
				break loop
			}
			h.route(cs, msg, first)
		case <-c.Lost():
			lose()
			break loop
		case <-ctx.Done():
			break loop
		}
	}
	h.endClaim(cs, log)
}

func (h *Host) acquire(cs *claimState, log *zap.Logger) error {
	p := newPause(100 * time.Millisecond)
	for {
		epoch, err := journal.AcquireEpoch(cs.ctx, h.cfg.Journal, cs.key)
		if err == nil {
			cs.epoch = epoch
			return nil
		}
		if cs.ctx.Err() != nil {
			return err
		}
		log.Warn("taking partition epoch failed; retrying", zap.Error(err), zap.Duration("in", p.next()))
		if !p.wait(cs.ctx.Done(), cs.claim.Lost()) {
			return err
		}
	}
}

// endClaim finishes in-flight work of the claim, abandons the rest, acks
// and releases it, and drops its actors from memory.
func (h *Host) endClaim(cs *claimState, log *zap.Logger) {
	cs.beginStop()
	done := chanOf(cs.wg.Wait)
	drain := time.NewTimer(h.cfg.DrainTimeout)
	defer drain.Stop()
	select {
	case <-done:
	case <-cs.ctx.Done():
		// Lost, fenced or hard stop: don't wait for the journal.
	case <-drain.C:
		log.Warn("in-flight messages did not finish in time; abandoning them", zap.Duration("drain_timeout", h.cfg.DrainTimeout))
		cs.cancel()
	}
	if cs.ctx.Err() == nil {
		h.settleHorizon(cs)
	}
	rctx, cancel := context.WithTimeout(context.WithoutCancel(h.hardCtx), 10*time.Second)
	if err := cs.claim.Release(rctx); err != nil {
		log.Warn("releasing partition failed", zap.Error(err))
	}
	cancel()
	h.mu.Lock()
	for key, a := range h.actors {
		if a.claim == cs && !a.scheduled {
			h.dropActor(key, a)
		}
	}
	if h.claims[cs.claim.Partition()] == cs {
		delete(h.claims, cs.claim.Partition())
	}
	if key := batchKey(cs.key, cs.epoch); h.owners[key] == cs {
		delete(h.owners, key)
	}
	h.mu.Unlock()
	close(cs.ended)
	log.Info("partition released")
}

// dropActor removes an actor from memory; h.mu is held.
func (h *Host) dropActor(key string, a *actor) {
	h.deactivate(a)
	delete(h.actors, key)
}

// refused gives up the claim holding partition under epoch, whose writes
// the journal refused. The flusher calls it before anyone waiting on those
// writes hears of the refusal, so nothing of the claim is acked after.
func (h *Host) refused(partition string, epoch int64, err error) {
	h.mu.Lock()
	cs := h.owners[batchKey(partition, epoch)]
	h.mu.Unlock()
	if cs != nil {
		h.giveUp(cs, err)
	}
}

// giveUp ends a claim whose journal writes were refused: fenced by a
// newer owner, or refused for good (a sequence conflict, say). It acks
// nothing more; the channel delivers its unacked messages again, to a new
// claim that rebuilds its actors from the journal.
func (h *Host) giveUp(cs *claimState, err error) {
	cs.mu.Lock()
	already := cs.fenced
	cs.fenced = true
	cs.mu.Unlock()
	if already {
		return
	}
	if errors.Is(err, journal.ErrFenced) {
		h.m.fenced.Add(1)
		h.log.Warn("partition fenced by a newer owner: acking nothing more from it", zap.String("partition", cs.key))
	} else {
		h.log.Error("journal refused the partition's writes: giving the partition up; its messages are delivered again",
			zap.String("partition", cs.key), zap.Error(err))
	}
	cs.cancel()
}
