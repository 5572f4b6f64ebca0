package actorhost

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/postbox-dev/postbox/journal"
	"go.uber.org/zap"
)

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
	err    error           // nothing of this generation was written
	fenced map[string]bool // partitions whose batches were refused
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
	if g.fenced[batchKey(partition, epoch)] {
		return &journal.FencedError{Partitions: []string{partition}}
	}
	return nil
}

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
	f.mu.Lock()
	g := f.cur
	if len(entries) > 0 || cp != nil {
		// Batches are per partition AND epoch: a straggler of an ended claim
		// must never ride on the new claim's epoch.
		key := batchKey(partition, epoch)
		b := g.batches[key]
		if b == nil {
			b = &journal.Batch{Partition: partition, Epoch: epoch}
			g.batches[key] = b
			g.order = append(g.order, key)
		}
		b.Entries = append(b.Entries, entries...)
		if cp != nil {
			b.Checkpoints = append(b.Checkpoints, *cp)
		}
		g.entries += len(entries)
	}
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

// run writes generations until stop is closed and the last one is written,
// or ctx ends.
func (f *flusher) run(ctx context.Context) {
	defer close(f.stopped)
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

func (f *flusher) flushOnce(ctx context.Context) {
	f.mu.Lock()
	g := f.cur
	f.cur = newGen()
	f.mu.Unlock()
	if len(g.order) > 0 {
		f.write(ctx, g)
	}
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
	backoff := 50 * time.Millisecond
	for {
		err := f.j.Append(ctx, batches...)
		switch {
		case err == nil:
		case errors.Is(err, journal.ErrFenced):
			// Which batches were refused: those of a named partition whose
			// epoch is not the current one.
			var fe *journal.FencedError
			g.fenced = map[string]bool{}
			if errors.As(err, &fe) {
				for _, p := range fe.Partitions {
					cur, cerr := f.j.Epoch(ctx, p)
					for _, b := range batches {
						if b.Partition == p && (cerr != nil || b.Epoch != cur) {
							g.fenced[batchKey(p, b.Epoch)] = true
						}
					}
				}
			}
		case errors.Is(err, journal.ErrSequence):
			// Someone else extended an actor's history: find the partition
			// and treat it as fenced; write the rest.
			g.fenced = map[string]bool{}
			for _, b := range batches {
				if err := f.j.Append(ctx, b); err != nil {
					f.log.Warn("journal refused batch; giving up the partition", zap.String("partition", b.Partition), zap.Error(err))
					g.fenced[batchKey(b.Partition, b.Epoch)] = true
				}
			}
		case errors.Is(err, journal.ErrClosed), ctx.Err() != nil:
			g.err = err
		default:
			f.log.Warn("journal append failed; retrying", zap.Error(err), zap.Duration("in", backoff))
			select {
			case <-time.After(backoff):
				backoff = min(backoff*2, 5*time.Second)
				continue
			case <-ctx.Done():
				g.err = err
			}
		}
		break
	}
	for key := range g.fenced {
		// The owners' claims end when they see it; say here what was refused.
		f.log.Warn("journal refused a stale owner's writes: a newer owner holds the partition", zap.String("batch", key))
	}
	f.m.flushed(g.entries, time.Since(start))
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
