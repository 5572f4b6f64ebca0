// Package lease is the leased-partition engine under channel/sqlite and
// channel/redis, written once; a backend is a small Driver that stores the
// leases and moves the messages.
//
// The engine owns the Run lifecycle and the lease keeper: every LeaseTTL/3
// one Tick heartbeats, renews the leases and takes free partitions up to
// the fair share ceil(partitions/live consumers). It drains the claims
// beyond the share, ends a claim by its local-clock watchdog before its
// lease can expire in the store, and keeps each claim's state, messages in
// flight and buffered acks.
package lease

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/postbox-dev/postbox/channel"
	"github.com/postbox-dev/postbox/channel/internal/runonce"
)

// Held is a lease the consumer holds: its partition under its epoch.
type Held struct {
	Partition int32
	Epoch     int64
}

// TickResult is what one Tick found and did.
type TickResult struct {
	Live  int     // consumers with a live heartbeat, this one included
	Lost  []int32 // held partitions no longer this consumer's under their epoch
	Taken []Held  // free partitions taken, each under its new epoch
}

// Driver is the storage of one leased mailbox.
type Driver interface {
	// Tick is one round of the keeper, atomic in the store: when take is
	// true, heartbeat the consumer, forget consumers whose heartbeat
	// expired, renew the held leases and take free partitions, lowest
	// first, until the consumer owns ceil(partitions/live). When take is
	// false the consumer is draining: it leaves the live count, renews its
	// leases and takes nothing.
	Tick(ctx context.Context, held []Held, take bool) (TickResult, error)
	// NewClaim makes the driver's side of a claim the keeper took.
	NewClaim(c *Claim) ClaimDriver
	// Flush is called when a claim has BatchSize acks waiting.
	Flush()
	// Work runs the driver's loops (a poller, an ack flusher) until ctx
	// ends and what it started has stopped; an error ends Run.
	Work(ctx context.Context) error
}

// ClaimDriver is a driver's side of one claim.
type ClaimDriver interface {
	// Start runs once the claim is registered, before onClaim is called.
	// work lives until Run has drained.
	Start(work context.Context)
	// Wake is called, outside the engine's locks, after the claim's state
	// changed or an ack made room: a reader waiting looks again.
	Wake()
	// Release calls take for the acks to apply, makes them durable and
	// drops the lease, and reports whether the lease was still the
	// claim's. After an error the acks are kept for another Release.
	Release(ctx context.Context, take func() []Ref) (stillOurs bool, err error)
}

// Config configures an Engine: the consumer's options after Defaults, Err
// (what the backend found wrong with its own) and Runs.Attach.
type Config struct {
	Backend, Mailbox, Owner string
	LeaseTTL                time.Duration
	BatchSize, Buffer       int
	Partitions              int
	Err                     error
	Attach                  func() (closing <-chan struct{}, detach func(), err error)
}

// localTTL is how long after sending a renewal the consumer trusts its
// lease: the store's TTL runs from when it got the renewal, and the margin
// covers a late timer and clock rate differences.
func (c Config) localTTL() time.Duration { return c.LeaseTTL - c.LeaseTTL/10 }

// Engine is a leased mailbox's channel.Consumer: it shares the mailbox's
// partitions with its other consumers and hands each partition it owns to
// onClaim as a Claim.
type Engine struct {
	cfg Config
	err error // what validating the options found
	d   Driver

	run runonce.Gate

	// Lock order: a driver's locks, Claim.mu, mu.
	mu       sync.Mutex
	claims   map[int32]*Claim // holding a lease: active or draining
	stopping bool             // Run is draining: take no partitions
	work     context.Context  // lives until the claims have drained; set before the keeper starts
	handlers sync.WaitGroup   // onClaim calls; Add under mu while !stopping
}

var _ channel.Consumer = (*Engine)(nil)

// New returns an engine over d; Run reports what is wrong with cfg.
func New(cfg Config, d Driver) *Engine {
	return &Engine{cfg: cfg, err: cmp.Or(cfg.Err, cfg.validate()), d: d, claims: make(map[int32]*Claim)}
}

// Backend implements channel.Consumer.
func (e *Engine) Backend() string { return e.cfg.Backend }

// Mailbox implements channel.Consumer.
func (e *Engine) Mailbox() string { return e.cfg.Mailbox }

// Run implements channel.Consumer. It also ends when the mailbox is
// closed, the driver's Work fails, or the store fails the keeper from the
// start (see keep).
func (e *Engine) Run(ctx context.Context, onClaim func(channel.Claim)) error {
	b := e.cfg.Backend
	if e.err != nil {
		return e.err
	}
	if onClaim == nil {
		return fmt.Errorf("%s: Consumer.Run: onClaim is nil: pass a function that consumes the claim and releases it", b)
	}
	ctx, end, err := e.run.Begin(ctx)
	if err != nil {
		return fmt.Errorf("%s: consumer run: %w", b, err)
	}
	defer end()
	closing, detach, err := e.cfg.Attach()
	if err != nil {
		return fmt.Errorf("%s: consumer run: %w", b, err)
	}
	defer detach()

	// ctx ends the run; work keeps the keeper and the driver going until
	// the claims have drained.
	work, stopWork := context.WithCancel(context.WithoutCancel(ctx))
	defer stopWork()
	e.mu.Lock()
	e.work = work
	e.mu.Unlock()

	errc := make(chan error, 2)
	var wg sync.WaitGroup
	wg.Go(func() { errc <- e.keep(work, onClaim) })
	wg.Go(func() { errc <- e.d.Work(work) })
	select {
	case <-ctx.Done():
	case <-closing:
	case err = <-errc:
	}

	// Drain: no new claims, no new deliveries; the onClaim calls finish.
	e.mu.Lock()
	e.stopping = true
	e.mu.Unlock()
	for _, c := range e.snapshot() {
		c.drain()
	}
	cleanup, cancelCleanup := context.WithTimeout(context.WithoutCancel(ctx), e.cfg.LeaseTTL)
	defer cancelCleanup()
	// Leave the live count, so that the others raise their fair share now
	// rather than after LeaseTTL. Best effort: the heartbeat expires.
	_ = e.tick(cleanup, onClaim)
	e.handlers.Wait()
	e.releaseAll(context.WithoutCancel(ctx), e.snapshot()) // best effort: an unreleased lease expires
	stopWork()
	wg.Wait()

	if err != nil {
		return fmt.Errorf("%s: consumer %s: %w", b, e.cfg.Owner, err)
	}
	return nil
}

// Close implements channel.Consumer.
func (e *Engine) Close() error {
	e.run.Close()
	return nil
}

// Claims returns the driver's sides of the claims, in partition order.
func Claims[C ClaimDriver](e *Engine) []C {
	var out []C
	for _, c := range e.snapshot() {
		out = append(out, c.d.(C))
	}
	return out
}

// snapshot returns the registered claims in partition order.
func (e *Engine) snapshot() []*Claim {
	e.mu.Lock()
	out := slices.Collect(maps.Values(e.claims))
	e.mu.Unlock()
	slices.SortFunc(out, func(a, b *Claim) int { return cmp.Compare(a.partition, b.partition) })
	return out
}

// keep runs the lease keeper until ctx ends. Once a tick has succeeded, a
// failed one is tried again at the next, however long the store is away
// (the watchdogs end the claims meanwhile). One that has not once
// succeeded within a LeaseTTL gives up: a store that never answered is
// more likely misconfigured than restarting.
func (e *Engine) keep(ctx context.Context, onClaim func(channel.Claim)) error {
	began, answered := time.Now(), false
	return Every(ctx, e.cfg.LeaseTTL/3, nil, func() (bool, error) {
		err := e.tick(ctx, onClaim)
		switch {
		case err == nil:
			answered = true
		case !answered && time.Since(began) >= e.cfg.LeaseTTL:
			return false, err
		}
		return false, nil
	})
}

// Every runs fn at once, then again d after it returned or on a wake-up,
// and at once when it reports more, until ctx ends or fn fails.
func Every(ctx context.Context, d time.Duration, wake <-chan struct{}, fn func() (more bool, err error)) error {
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-wake:
		}
		more, err := fn()
		switch {
		case ctx.Err() != nil:
			return nil
		case err != nil:
			return err
		case more:
			t.Reset(0)
		default:
			t.Reset(d)
		}
	}
}

// tick runs one Tick and applies it: lost claims end, claims beyond the
// fair share drain (the highest partitions first: deterministic, and it
// leaves the low ones where they are), taken partitions start.
func (e *Engine) tick(ctx context.Context, onClaim func(channel.Claim)) error {
	hold := e.snapshot()
	e.mu.Lock()
	stopping := e.stopping
	e.mu.Unlock()
	held := make([]Held, len(hold))
	for i, c := range hold {
		held[i] = Held{Partition: c.partition, Epoch: c.epoch}
	}
	sent := time.Now()
	res, err := e.d.Tick(ctx, held, !stopping)
	if err != nil {
		return fmt.Errorf("renew leases: %w", err)
	}
	var active []*Claim
	for _, c := range hold {
		if slices.Contains(res.Lost, c.partition) {
			c.Lose()
		} else if c.renewed(sent.Add(e.cfg.localTTL())) {
			active = append(active, c)
		}
	}
	if target := FairShare(e.cfg.Partitions, res.Live); !stopping && len(active) > target {
		for _, c := range active[target:] {
			c.drain()
		}
	}

	var started, giveBack []*Claim
	e.mu.Lock()
	for _, h := range res.Taken {
		c := newClaim(e, h, sent.Add(e.cfg.localTTL()))
		c.d = e.d.NewClaim(c)
		if e.stopping { // Run began draining during the Tick
			giveBack = append(giveBack, c)
			continue
		}
		e.claims[h.Partition] = c
		e.handlers.Add(1)
		started = append(started, c)
	}
	work := e.work
	e.mu.Unlock()
	for _, c := range started {
		c.startWatchdog()
		c.d.Start(work)
		go func() {
			defer e.handlers.Done()
			onClaim(c)
		}()
	}
	if err := e.releaseAll(context.WithoutCancel(ctx), giveBack); err != nil {
		return fmt.Errorf("give back a partition taken while stopping: %w", err)
	}
	return nil
}

// releaseAll releases each of claims within a LeaseTTL of now, whether or
// not Run's contexts have ended: a lease left behind holds its partition up.
func (e *Engine) releaseAll(ctx context.Context, claims []*Claim) error {
	if len(claims) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, e.cfg.LeaseTTL)
	defer cancel()
	var errs []error
	for _, c := range claims {
		errs = append(errs, c.Release(ctx))
	}
	return errors.Join(errs...)
}

// FairShare is ceil(partitions/live): how many partitions a consumer owns.
func FairShare(partitions, live int) int {
	live = max(live, 1)
	return (partitions + live - 1) / live
}

func (e *Engine) forget(c *Claim) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.claims[c.partition] == c {
		delete(e.claims, c.partition)
	}
}

// Kick sends on a wake-up channel of room 1 unless a wake-up is pending.
func Kick(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// ErrReleased reports an Ack after Release.
var ErrReleased = errors.New("claim already released: its unacked messages go to the partition's next owner; ack before Release")
