package actorhost

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/postbox-dev/postbox/channel"
	"github.com/postbox-dev/postbox/journal"
	"go.uber.org/zap"
)

// Host consumes a channel and runs the registered actors. Create one with
// New, then Start it; Stop ends it gracefully.
type Host struct {
	cfg     Config
	mailbox string // the consumer's mailbox identity, in journal partition keys
	log     *zap.Logger
	m       *metrics
	flusher *flusher

	mu       sync.Mutex
	cond     *sync.Cond // signals the ready queue
	ready    []*actor
	closed   bool // ready queue closed: workers exit
	actors   map[string]*actor
	claims   map[int32]*claimState
	started  bool
	stopping atomic.Bool // Stop has begun
	stopErr  error       // what the first Stop returned; set before stopped closes

	runCancel     context.CancelFunc // ends consumer.Run
	hardCtx       context.Context    // ends everything at once
	hardCancel    context.CancelFunc
	consumerDone  chan struct{}
	failure       error      // why the host stopped on its own; guarded by mu
	claimsRunning int        // onClaim calls in progress; guarded by mu
	claimsIdle    *sync.Cond // signalled when claimsRunning drops to 0
	workerWG      sync.WaitGroup
	stopped       chan struct{}
}

// actor is one actor's mailbox queue and, while active, its state. Fields
// under "worker" belong to the worker that has it scheduled.
type actor struct {
	addr channel.Address
	key  string    // journal key: the address, or unaddressedActor
	typ  actorType // unhandled{} when no handler can run its messages

	// guarded by Host.mu
	queue     []*delivery
	scheduled bool
	lastUsed  time.Time
	claim     *claimState

	// worker
	active          bool
	state           any
	seq             int64
	sinceCheckpoint int
	// outcomes holds the outcomes since the last checkpoint, and every
	// outcome not yet durable: the journal cannot answer for those.
	outcomes map[string]outcome
	// outcomesWhole: outcomes holds every outcome in the actor's history
	// (it was rebuilt from seq 1 and not cleared since), so a message
	// missing from it has none and the journal need not be asked.
	outcomesWhole bool
	pending       map[string]*progress
	lastGen       *flushGen
	// broken is why the actor's journal cannot be replayed (a checkpoint
	// that does not decode, a handler that diverges): the same every time,
	// so its messages are dead-lettered with it instead of retried.
	broken error
}

// outcome is a message's outcome as the actor knows it.
type outcome struct {
	kind journal.Kind
	gen  *flushGen // the write that holds it; nil when read from the journal
}

type delivery struct {
	msg   channel.Message
	id    string // the message ID in the journal (see route)
	claim *claimState
	first bool // surely the message's first delivery: no attempt to pre-mark
	done  bool
	// reject, when set, is why no handler may run the message (no valid
	// address or ID, an unknown type): it is dead-lettered with reason.
	reject error
	reason string
}

// New checks cfg and returns a host ready to Start.
func New(cfg Config) (*Host, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	m, err := newMetrics(cfg.Metrics, cfg.MetricLabels)
	if err != nil {
		return nil, err
	}
	h := &Host{
		cfg: cfg, log: cfg.Logger, m: m, mailbox: cfg.Consumer.Mailbox(),
		actors: map[string]*actor{}, claims: map[int32]*claimState{},
		consumerDone: make(chan struct{}), stopped: make(chan struct{}),
	}
	h.cond = sync.NewCond(&h.mu)
	h.claimsIdle = sync.NewCond(&h.mu)
	h.flusher = newFlusher(cfg.Journal, cfg.Logger, m)
	return h, nil
}

// Start begins consuming and returns at once. ctx bounds nothing after
// Start returns; use Stop.
func (h *Host) Start(ctx context.Context) error {
	h.mu.Lock()
	if h.started {
		h.mu.Unlock()
		return errors.New("actorhost: Start called twice")
	}
	h.started = true
	h.mu.Unlock()

	h.hardCtx, h.hardCancel = context.WithCancel(context.WithoutCancel(ctx))
	runCtx, runCancel := context.WithCancel(h.hardCtx)
	h.runCancel = runCancel

	go h.flusher.run(h.hardCtx)
	for range h.cfg.Concurrency {
		h.workerWG.Add(1)
		go h.worker()
	}
	go h.janitor(runCtx)
	go func() {
		defer close(h.consumerDone)
		err := h.cfg.Consumer.Run(runCtx, h.onClaim)
		if err != nil && runCtx.Err() == nil {
			h.log.Error("consumer failed; stopping the host", zap.Error(err))
			h.mu.Lock()
			h.failure = fmt.Errorf("actorhost: consumer: %w", err)
			h.mu.Unlock()
			go func() {
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				defer cancel()
				h.Stop(ctx)
			}()
		}
	}()
	return nil
}

// Stop stops consuming, lets in-flight messages finish, abandons queued
// ones (they are delivered again later), writes the journal, acks what is
// done and releases the partitions. If ctx ends first, in-flight work is
// abandoned and Stop returns ctx's error. A Stop while another is under
// way waits for that one, or for its own ctx, whichever ends first.
func (h *Host) Stop(ctx context.Context) error {
	if h.stopping.Swap(true) {
		// Not on a mutex: under testing/synctest a goroutine blocked on
		// one would hold virtual time still.
		select {
		case <-h.stopped:
			return h.stopErr
		case <-ctx.Done():
			return fmt.Errorf("actorhost: stop: %w", ctx.Err())
		}
	}
	var result error
	func() {
		defer close(h.stopped)
		if h.runCancel == nil {
			return
		}
		h.runCancel()
		wait := func(done <-chan struct{}) bool {
			select {
			case <-done:
				return true
			case <-ctx.Done():
				return false
			}
		}
		closeReady := func() {
			h.mu.Lock()
			h.closed = true
			h.cond.Broadcast()
			h.mu.Unlock()
		}
		// Claims end first (in-flight work finishes, queued work is
		// abandoned), then workers, then the last group commit.
		ok := wait(h.consumerDone) && wait(chanOf(func() {
			h.mu.Lock()
			for h.claimsRunning > 0 {
				h.claimsIdle.Wait()
			}
			h.mu.Unlock()
		}))
		if ok {
			closeReady()
			// Every claim has ended, so what workers still run was abandoned:
			// give them the drain timeout, then stop waiting for them.
			workers := chanOf(h.workerWG.Wait)
			select {
			case <-workers:
			case <-ctx.Done():
			case <-time.After(h.cfg.DrainTimeout):
				h.log.Warn("handlers still running after the drain timeout; leaving them behind")
			}
			ok = h.flusher.close(ctx) == nil
		}
		if !ok {
			result = fmt.Errorf("actorhost: stop: in-flight work abandoned: %w", ctx.Err())
		}
		h.hardCancel()
		closeReady()
		h.stopErr = result
	}()
	return result
}

// Stopped is closed once the host has stopped, by Stop or because its
// consumer failed (see Err).
func (h *Host) Stopped() <-chan struct{} { return h.stopped }

// Err returns why the host stopped on its own, if it did.
func (h *Host) Err() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.failure
}

// Stats returns the host's counters.
func (h *Host) Stats() Stats { return h.m.snapshot() }

func chanOf(fn func()) <-chan struct{} {
	c := make(chan struct{})
	go func() { fn(); close(c) }()
	return c
}

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
	log.Info("partition claimed", zap.Int64("epoch", cs.epoch))
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
			first := msg.Deliveries == 1
			if msg.Deliveries == 0 {
				var err error
				if first, err = h.firstDelivery(cs, msg.Offset); err != nil {
					log.Warn("could not journal the partition's horizon; giving the partition back", zap.Error(err))
					break loop
				}
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
	backoff := 100 * time.Millisecond
	for {
		epoch, err := journal.AcquireEpoch(cs.ctx, h.cfg.Journal, cs.key)
		if err == nil {
			cs.epoch = epoch
			return nil
		}
		if cs.ctx.Err() != nil {
			return err
		}
		log.Warn("taking partition epoch failed; retrying", zap.Error(err))
		select {
		case <-time.After(backoff):
			backoff = min(backoff*2, 5*time.Second)
		case <-cs.ctx.Done():
			return err
		case <-cs.claim.Lost():
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
	h.mu.Unlock()
	close(cs.ended)
	log.Info("partition released")
}

// dropActor removes an actor from memory; h.mu is held.
func (h *Host) dropActor(key string, a *actor) {
	h.deactivate(a)
	delete(h.actors, key)
}

// route queues msg on its actor.
func (h *Host) route(cs *claimState, msg channel.Message, first bool) {
	d := &delivery{msg: msg, id: msg.ID, claim: cs, first: first}
	key, typ := msg.Address.String(), actorType(nil)
	if reason, err := identityError(msg); err != nil {
		// No journal can key it by its own identity: its dead-letter
		// outcome goes to the partition's unaddressed actor instead.
		key, typ = unaddressedActor(cs.key), unhandled{}
		d.id, d.reject, d.reason = journalID(msg.ID), err, reason
	} else if t, ok := h.cfg.Registry.lookup(msg.Address.Type); ok {
		typ = t
	} else {
		typ = unhandled{}
		d.reject, d.reason = fmt.Errorf("%w: %q", ErrUnknownActorType, msg.Address.Type), "unknown actor type"
	}
	cs.mu.Lock()
	cs.inflight = append(cs.inflight, d)
	cs.wg.Add(1)
	cs.mu.Unlock()
	h.m.inFlight.Add(1)

	h.mu.Lock()
	if h.closed {
		// The workers are gone (a hard stop): no one would take it.
		h.mu.Unlock()
		h.abandon(d)
		return
	}
	a := h.actors[key]
	if a == nil {
		a = &actor{addr: msg.Address, key: key, typ: typ, claim: cs}
		h.actors[key] = a
	}
	a.queue = append(a.queue, d)
	if !a.scheduled {
		a.scheduled = true
		h.ready = append(h.ready, a)
		h.cond.Signal()
	}
	h.mu.Unlock()
}

func (h *Host) worker() {
	defer h.workerWG.Done()
	for {
		h.mu.Lock()
		for len(h.ready) == 0 && !h.closed {
			h.cond.Wait()
		}
		if len(h.ready) == 0 {
			h.mu.Unlock()
			return
		}
		a := h.ready[0]
		h.ready[0] = nil
		h.ready = h.ready[1:]
		d := a.queue[0]
		a.queue[0] = nil
		a.queue = a.queue[1:]
		h.mu.Unlock()

		h.process(a, d)

		h.mu.Lock()
		a.lastUsed = time.Now()
		if len(a.queue) > 0 {
			h.ready = append(h.ready, a)
			h.cond.Signal()
		} else {
			a.scheduled = false
		}
		h.mu.Unlock()
	}
}

// finish marks d done and acks every done delivery at the head of its
// claim: the watermark.
func (h *Host) finish(d *delivery) {
	cs := d.claim
	cs.mu.Lock()
	if cs.fenced || cs.lost {
		cs.mu.Unlock()
		h.abandon(d)
		return
	}
	d.done = true
	n := 0
	for n < len(cs.inflight) && cs.inflight[n].done {
		n++
	}
	if n > 0 {
		acks := make([]channel.Message, n)
		for i := range n {
			acks[i] = cs.inflight[i].msg
			cs.inflight[i] = nil
		}
		cs.inflight = cs.inflight[n:]
		if err := cs.claim.Ack(cs.ctx, acks...); err != nil {
			h.log.Warn("ack failed; the messages will be delivered again and deduplicated", zap.Error(err))
		}
		select {
		case cs.room <- struct{}{}:
		default:
		}
	}
	cs.mu.Unlock()
	cs.wg.Done()
	h.m.inFlight.Add(-1)
}

// abandon gives up d without acking it; it will be delivered again.
func (h *Host) abandon(d *delivery) {
	d.claim.wg.Done()
	h.m.inFlight.Add(-1)
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

// afterFlush runs finish(d) once the write it depends on is durable, or
// abandons d if that write was refused.
func (h *Host) afterFlush(d *delivery) func(*flushGen) {
	return func(g *flushGen) {
		if err := g.errFor(d.claim.key, d.claim.epoch); err != nil {
			if g.refused(err) {
				h.giveUp(d.claim, err)
			}
			h.abandon(d)
			return
		}
		h.finish(d)
	}
}

// wait blocks until g is durable and returns its outcome for the claim.
func (h *Host) wait(cs *claimState, g *flushGen) error {
	select {
	case <-g.done:
	case <-cs.ctx.Done():
		if !g.durable() { // when both are ready, a refusal still counts
			return ErrAbandoned
		}
	}
	if err := g.errFor(cs.key, cs.epoch); err != nil {
		if g.refused(err) {
			h.giveUp(cs, err)
		}
		return fmt.Errorf("%w: %w", ErrAbandoned, err)
	}
	return nil
}

// append journals one entry of a's and returns its generation.
func (h *Host) append(a *actor, cs *claimState, kind journal.Kind, msgID string, data []byte, cp bool, then func(*flushGen)) *flushGen {
	a.seq++
	e := journal.Entry{Actor: a.key, Seq: a.seq, Kind: kind, MsgID: msgID, Data: data}
	var c *journal.Checkpoint
	if cp && a.broken == nil { // a broken actor's state is not its history's
		if st, err := a.typ.encode(a.state); err == nil {
			c = &journal.Checkpoint{Actor: a.key, Seq: a.seq, State: st}
		} else {
			h.log.Warn("encoding state for a checkpoint failed; skipping it", zap.String("actor", a.key), zap.Error(err))
		}
	}
	g := h.flusher.add(cs.key, cs.epoch, []journal.Entry{e}, c, then)
	a.lastGen = g
	return g
}

// activate loads a from its checkpoint and journal tail.
func (h *Host) activate(a *actor, cs *claimState) error {
	if a.lastGen != nil {
		// Writes of an earlier activation must be readable first.
		if err := h.wait(cs, a.lastGen); err != nil {
			return err
		}
	}
	hist, err := rebuild(cs.ctx, h.cfg.Journal, a.typ, a.key, a.addr, journal.MaxSeq, true)
	if err != nil {
		return err
	}
	h.deactivate(a)
	if hist.broken != nil {
		h.m.brokenActors.Add(1)
		h.log.Error("actor cannot be rebuilt from its journal: its messages are dead-lettered until the cause is fixed (then redrive them)",
			zap.String("actor", a.key), zap.Error(hist.broken))
	}
	h.m.activeActors.Add(1)
	a.active, a.state, a.seq, a.broken = true, hist.state, hist.seq, hist.broken
	a.outcomes, a.pending = hist.outcomes, hist.pending
	a.outcomesWhole = hist.checkpoint == 0
	a.sinceCheckpoint = int(hist.seq - hist.checkpoint)
	h.m.activations.Add(1)
	h.m.replayed.Add(int64(hist.replayed))
	h.m.effectsAnswered.Add(int64(hist.answered))
	return nil
}

func (h *Host) deactivate(a *actor) {
	if a.active {
		a.active = false
		a.state = nil
		h.m.activeActors.Add(-1)
	}
	if a.broken != nil {
		a.broken = nil
		h.m.brokenActors.Add(-1)
	}
}

// backoff is the delay before retry number n (n >= 1): exponential, capped,
// with jitter over its upper half so retries of many actors spread out.
func (h *Host) backoff(n int) time.Duration {
	d := h.cfg.BackoffInitial
	for i := 1; i < n && d < h.cfg.BackoffMax; i++ {
		d *= 2
	}
	d = min(d, h.cfg.BackoffMax)
	half := d / 2
	return half + time.Duration(rand.Int64N(int64(half)+1))
}

// janitor passivates idle actors and keeps memory under MaxActors.
func (h *Host) janitor(ctx context.Context) {
	tick := time.NewTicker(max(min(h.cfg.IdleTimeout/2, time.Second), time.Millisecond))
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		h.passivate(time.Now())
	}
}

func (h *Host) passivate(now time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	var idle []*actor
	for _, a := range h.actors {
		if a.scheduled || len(a.queue) > 0 || (a.lastGen != nil && !a.lastGen.durable()) {
			continue
		}
		idle = append(idle, a)
	}
	over := len(h.actors) - h.cfg.MaxActors
	sort.Slice(idle, func(i, j int) bool { return idle[i].lastUsed.Before(idle[j].lastUsed) })
	for _, a := range idle {
		if over > 0 || now.Sub(a.lastUsed) >= h.cfg.IdleTimeout {
			h.dropActor(a.key, a)
			over--
		}
	}
}
