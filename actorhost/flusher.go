package actorhost

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/postbox-dev/postbox/journal"
	"go.uber.org/zap"
)

// The host's side of the group commit: append an entry, wait for it to be
// durable, or act once it is.

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

// flusher is the group commit: appends from every actor gather in the
// current generation while the previous one is being written, and each
// generation becomes one journal.Append. Callers wait on their generation
// (side effects) or hang a callback on it (acks).
type flusher struct {
	j   journal.Journal
	log *zap.Logger
	m   *metrics

	mu      sync.Mutex
	cur     *flushGen
	exited  bool // run returned: adds fail at once
	kick    chan struct{}
	stopped chan struct{}
	stop    chan struct{}
}

// flushGen is one group commit.
type flushGen struct {
	batches map[string]*journal.Batch
	order   []string
	entries int
	then    []func(*flushGen)
	done    chan struct{}
	// set before done closes:
	err     error            // nothing of this generation was written
	refusal map[string]error // batches the journal refused for good, by batchKey
}

func newGen() *flushGen {
	return &flushGen{batches: map[string]*journal.Batch{}, done: make(chan struct{})}
}

func batchKey(partition string, epoch int64) string { return fmt.Sprintf("%s#%d", partition, epoch) }

// errFor is the outcome of the generation for the writes of one partition
// under one epoch.
func (g *flushGen) errFor(partition string, epoch int64) error {
	if g.err != nil {
		return g.err
	}
	return g.refusal[batchKey(partition, epoch)]
}

// refused reports whether err, from errFor, is the journal refusing the
// partition's writes for good, rather than the host stopping.
func (g *flushGen) refused(err error) bool { return err != nil && err != g.err }

func (g *flushGen) durable() bool {
	select {
	case <-g.done:
		return true
	default:
		return false
	}
}

func newFlusher(j journal.Journal, log *zap.Logger, m *metrics) *flusher {
	return &flusher{j: j, log: log, m: m, cur: newGen(),
		kick: make(chan struct{}, 1), stop: make(chan struct{}), stopped: make(chan struct{})}
}

// add queues entries (and a checkpoint) of one partition under epoch, and
// an optional callback run once the write's outcome is known (see errFor).
func (f *flusher) add(partition string, epoch int64, entries []journal.Entry, cp *journal.Checkpoint, then func(*flushGen)) *flushGen {
	return f.queue(then, func(g *flushGen) {
		if len(entries) == 0 && cp == nil {
			return
		}
		b := g.batch(partition, epoch)
		b.Entries = append(b.Entries, entries...)
		if cp != nil {
			b.Checkpoints = append(b.Checkpoints, *cp)
		}
		g.entries += len(entries)
	})
}

// setHorizon queues the partition's horizon under epoch (see
// journal.Batch.Horizon).
func (f *flusher) setHorizon(partition string, epoch, horizon int64) *flushGen {
	return f.queue(nil, func(g *flushGen) { g.batch(partition, epoch).Horizon = horizon })
}

// queue puts what fill writes into the current generation, with then.
func (f *flusher) queue(then func(*flushGen), fill func(*flushGen)) *flushGen {
	f.mu.Lock()
	if f.exited {
		f.mu.Unlock()
		g := newGen()
		g.err = errStopped
		if then != nil {
			g.then = []func(*flushGen){then}
		}
		f.finish(g)
		return g
	}
	g := f.cur
	fill(g)
	if then != nil {
		g.then = append(g.then, then)
	}
	f.mu.Unlock()
	select {
	case f.kick <- struct{}{}:
	default:
	}
	return g
}

// batch returns the generation's batch of partition under epoch. Batches
// are per partition AND epoch: a straggler of an ended claim must never
// ride on the new claim's epoch.
func (g *flushGen) batch(partition string, epoch int64) *journal.Batch {
	key := batchKey(partition, epoch)
	b := g.batches[key]
	if b == nil {
		b = &journal.Batch{Partition: partition, Epoch: epoch}
		g.batches[key] = b
		g.order = append(g.order, key)
	}
	return b
}

// run writes generations until stop is closed and the last one is written,
// or ctx ends.
func (f *flusher) run(ctx context.Context) {
	defer close(f.stopped)
	defer f.exit()
	for {
		select {
		case <-f.kick:
		case <-f.stop:
			f.flushOnce(ctx) // whatever arrived before stop
			return
		case <-ctx.Done():
			return
		}
		f.flushOnce(ctx)
	}
}

// errStopped fails what is queued after the flusher has stopped.
var errStopped = errors.New("actorhost: host stopped; journal write abandoned")

// exit fails what is queued and all later adds, so that no one waits for
// a write that will never come.
func (f *flusher) exit() {
	f.mu.Lock()
	g := f.cur
	f.exited = true
	f.mu.Unlock()
	g.err = errStopped
	f.finish(g)
}

func (f *flusher) flushOnce(ctx context.Context) {
	f.mu.Lock()
	g := f.cur
	f.cur = newGen()
	f.mu.Unlock()
	if len(g.order) > 0 {
		f.write(ctx, g)
	}
	f.finish(g)
}

// finish publishes g's outcome and runs its callbacks.
func (f *flusher) finish(g *flushGen) {
	close(g.done)
	if len(g.then) > 0 {
		// Acks run beside the next write, not before it.
		go func() {
			for _, fn := range g.then {
				fn(g)
			}
		}()
	}
}

func (f *flusher) write(ctx context.Context, g *flushGen) {
	batches := make([]journal.Batch, 0, len(g.order))
	for _, p := range g.order {
		batches = append(batches, *g.batches[p])
	}
	start := time.Now()
	g.refusal = map[string]error{}
	err := f.append(ctx, batches)
	var fe *journal.FencedError
	switch {
	case err == nil:
	case errors.As(err, &fe):
		// The other batches were written. Which were refused: those of a
		// named partition whose epoch is not the current one.
		for _, p := range fe.Partitions {
			cur, cerr := f.j.Epoch(ctx, p)
			for _, b := range batches {
				if b.Partition == p && (cerr != nil || b.Epoch != cur) {
					g.refusal[batchKey(p, b.Epoch)] = &journal.FencedError{Partitions: []string{p}}
				}
			}
		}
	case journal.IsPermanent(err):
		// Nothing was written: write each batch alone, so one partition's
		// refusal never holds up another's.
		for _, b := range batches {
			if err := f.append(ctx, []journal.Batch{b}); err != nil {
				if !journal.IsPermanent(err) {
					g.err = err
					break
				}
				g.refusal[batchKey(b.Partition, b.Epoch)] = err
			}
		}
	default:
		g.err = err
	}
	for key, err := range g.refusal {
		// The owners' claims end when they see it; say here what was refused.
		f.m.refused.Add(1)
		f.log.Warn("journal refused a partition's writes", zap.String("batch", key), zap.Error(err))
	}
	f.m.flushed(g.entries, time.Since(start))
}

// append writes batches, retrying transient errors until ctx ends, and
// returns nil, a permanent error (see journal.IsPermanent), or the error
// that ended it (the journal closed, ctx done). A retry after an error may
// meet its own earlier write, which landed although its reply was lost: a
// refusal of a retry is checked against the journal's content, and the
// write counts as done when its entries are there.
func (f *flusher) append(ctx context.Context, batches []journal.Batch) error {
	p := newPause(50 * time.Millisecond)
	retry := false
	for {
		err := f.j.Append(ctx, batches...)
		switch {
		case err == nil:
			return nil
		case errors.Is(err, journal.ErrClosed), ctx.Err() != nil:
			return err
		case journal.IsPermanent(err):
			if !retry || errors.Is(err, journal.ErrFenced) {
				return err
			}
			landed, rerr := f.landed(ctx, batches)
			switch {
			case rerr != nil:
				err = rerr // cannot tell yet: try again
			case landed:
				return nil
			default:
				return err
			}
		}
		f.log.Warn("journal append failed; retrying", zap.Error(err), zap.Duration("in", p.next()))
		retry = true
		if !p.wait(ctx.Done(), nil) {
			return err
		}
	}
}

// landed reports whether the journal holds every entry of batches exactly
// (an earlier try of the same write committed). An error means the journal
// could not be read.
func (f *flusher) landed(ctx context.Context, batches []journal.Batch) (bool, error) {
	byActor := map[string][]journal.Entry{}
	var actors []string
	for _, b := range batches {
		for _, e := range b.Entries {
			if byActor[e.Actor] == nil {
				actors = append(actors, e.Actor)
			}
			byActor[e.Actor] = append(byActor[e.Actor], e)
		}
	}
	errDiffer, errEnough := errors.New("differs"), errors.New("enough")
	for _, actor := range actors {
		want := byActor[actor]
		i := 0
		err := f.j.Read(ctx, actor, want[0].Seq, func(e journal.Entry) error {
			if i == len(want) {
				return errEnough
			}
			w := want[i]
			if e.Seq != w.Seq || e.Kind != w.Kind || e.MsgID != w.MsgID || !bytes.Equal(e.Data, w.Data) {
				return errDiffer
			}
			i++
			return nil
		})
		switch {
		case errors.Is(err, errDiffer):
			return false, nil
		case err != nil && !errors.Is(err, errEnough):
			return false, err
		case i < len(want):
			return false, nil
		}
	}
	return len(actors) > 0, nil
}

// close writes what is queued and stops; bounded by ctx.
func (f *flusher) close(ctx context.Context) error {
	close(f.stop)
	select {
	case <-f.stopped:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
