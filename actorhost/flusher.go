package actorhost

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"time"

	"github.com/postbox-dev/postbox/journal"
	"go.uber.org/zap"
)

// flusher is the group commit: appends from every actor gather in the
// current generation while the previous one is being written, and each
// generation becomes one journal.Append. Callers wait on their ticket
// (side effects) or hang a callback on it (acks).
type flusher struct {
	j   journal.Journal
	log *zap.Logger
	m   *metrics
	// refused hears, before anyone waiting on the write, of each
	// partition's batch the journal refused for good.
	refused func(partition string, epoch int64, err error)

	mu      sync.Mutex
	cur     *flushGen
	exited  bool // run returned: adds fail at once
	kick    chan struct{}
	stopped chan struct{}
	stop    chan struct{}
}

// flushGen is one group commit.
type flushGen struct {
	batches map[batchID]*journal.Batch
	order   []batchID
	entries int
	then    []func()
	done    chan struct{}
	// set before done closes:
	err     error             // nothing of this generation was written
	refusal map[batchID]error // batches the journal refused for good
}

func newGen() *flushGen {
	return &flushGen{batches: map[batchID]*journal.Batch{}, done: make(chan struct{})}
}

// batchID names a batch: one partition's writes under one epoch.
type batchID struct {
	partition string
	epoch     int64
}

func batchKey(partition string, epoch int64) batchID { return batchID{partition, epoch} }

// ticket is one write's share of a generation: the batch of its
// partition under its epoch.
type ticket struct {
	g   *flushGen
	key batchID
}

// done is closed once the write's outcome is known.
func (t *ticket) done() <-chan struct{} { return t.g.done }

func (t *ticket) durable() bool {
	select {
	case <-t.g.done:
		return true
	default:
		return false
	}
}

// err is the write's outcome once done: nil when durable, else the
// journal's refusal of the partition's writes or why nothing was written.
func (t *ticket) err() error {
	if t.g.err != nil {
		return t.g.err
	}
	return t.g.refusal[t.key]
}

func newFlusher(j journal.Journal, log *zap.Logger, m *metrics, refused func(string, int64, error)) *flusher {
	return &flusher{j: j, log: log, m: m, refused: refused, cur: newGen(),
		kick: make(chan struct{}, 1), stop: make(chan struct{}), stopped: make(chan struct{})}
}

// add queues entries (and a checkpoint) of one partition under epoch, and
// an optional callback run with the write's outcome (see ticket.err).
func (f *flusher) add(partition string, epoch int64, entries []journal.Entry, cp *journal.Checkpoint, then func(error)) *ticket {
	if len(entries) == 0 && cp == nil {
		return f.queue(partition, epoch, then, nil)
	}
	return f.queue(partition, epoch, then, func(b *journal.Batch) int {
		b.Entries = append(b.Entries, entries...)
		if cp != nil {
			b.Checkpoints = append(b.Checkpoints, *cp)
		}
		return len(entries)
	})
}

// setHorizon queues the partition's horizon under epoch (see
// journal.Batch.Horizon).
func (f *flusher) setHorizon(partition string, epoch, horizon int64) *ticket {
	return f.queue(partition, epoch, nil, func(b *journal.Batch) int { b.Horizon = horizon; return 0 })
}

// queue puts what fill writes (nil: nothing, only then waits) into the
// partition's batch of the current generation; fill returns how many
// entries it added.
func (f *flusher) queue(partition string, epoch int64, then func(error), fill func(*journal.Batch) int) *ticket {
	t := &ticket{key: batchKey(partition, epoch)}
	f.mu.Lock()
	if f.exited {
		f.mu.Unlock()
		t.g = newGen()
		t.g.err = errStopped
		if then != nil {
			t.g.then = []func(){func() { then(t.err()) }}
		}
		f.finish(t.g)
		return t
	}
	t.g = f.cur
	if fill != nil {
		t.g.entries += fill(t.g.batch(partition, epoch))
	}
	if then != nil {
		t.g.then = append(t.g.then, func() { then(t.err()) })
	}
	f.mu.Unlock()
	select {
	case f.kick <- struct{}{}:
	default:
	}
	return t
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
				fn()
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
	g.refusal = map[batchID]error{}
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
	for _, b := range batches {
		if err := g.refusal[batchKey(b.Partition, b.Epoch)]; err != nil {
			f.m.refused.Add(1)
			f.log.Warn("journal refused a partition's writes", zap.String("partition", b.Partition), zap.Int64("epoch", b.Epoch), zap.Error(err))
			f.refused(b.Partition, b.Epoch, err)
		}
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
