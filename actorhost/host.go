package actorhost

import (
	"context"
	"errors"
	"fmt"
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
	owners   map[batchID]*claimState // claims whose epoch is taken
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
	lastWrite     *ticket
	// broken is why the actor's journal cannot be replayed (a checkpoint
	// that does not decode, a handler that diverges): the same every time,
	// so its messages are dead-lettered with it instead of retried.
	broken error
}

// outcome is a message's outcome as the actor knows it.
type outcome struct {
	kind  journal.Kind
	write *ticket // the write that holds it; nil when read from the journal
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
		actors: map[string]*actor{}, claims: map[int32]*claimState{}, owners: map[batchID]*claimState{},
		consumerDone: make(chan struct{}), stopped: make(chan struct{}),
	}
	h.cond = sync.NewCond(&h.mu)
	h.claimsIdle = sync.NewCond(&h.mu)
	h.flusher = newFlusher(cfg.Journal, cfg.Logger, m, h.refused)
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
