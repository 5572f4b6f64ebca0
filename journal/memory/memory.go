// Package memory is an in-process journal.Journal: maps behind a mutex.
// It is for tests and for actors whose history may die with the process;
// nothing survives Close, and it cannot be shared between processes.
package memory

import (
	"cmp"
	"context"
	"slices"
	"sync"

	"github.com/postbox-dev/postbox/journal"
)

// Options tune New.
type Options struct {
	// KeepCheckpoints is how many of an actor's newest checkpoints are kept
	// when a newer one is written, as in journal/sqlite; a negative value
	// keeps all of them. Defaults to 3.
	KeepCheckpoints int
}

// DefaultKeepCheckpoints is what KeepCheckpoints 0 means.
const DefaultKeepCheckpoints = journal.DefaultKeepCheckpoints

// Journal is an in-memory journal. It is safe for concurrent use.
type Journal struct {
	keep int // <= 0 keeps every checkpoint

	mu       sync.RWMutex
	closed   bool
	actors   map[string]*history
	epochs   map[string]int64
	horizons map[string]int64
}

// history is one actor's entries, indexed by Seq-1, plus what lookups need.
type history struct {
	entries     []journal.Entry
	outcomes    map[string]int       // msgID -> index of its outcome entry
	checkpoints []journal.Checkpoint // ascending Seq
}

var _ journal.Journal = (*Journal)(nil)

// New returns an empty journal.
func New(opts Options) *Journal {
	keep := opts.KeepCheckpoints
	if keep == 0 {
		keep = DefaultKeepCheckpoints
	}
	return &Journal{
		keep:     keep,
		actors:   make(map[string]*history),
		epochs:   make(map[string]int64),
		horizons: make(map[string]int64),
	}
}

// Append implements journal.Journal. It checks the whole call before
// changing anything, so an error other than *journal.FencedError means
// nothing was written.
func (j *Journal) Append(ctx context.Context, batches ...journal.Batch) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if write, err := journal.BeginAppend(ctx, j.closed, batches); !write {
		return err
	}

	current, fenced, _ := journal.Fence(batches, func(p string) (int64, error) { return j.epochs[p], nil })
	// next is each touched actor's next sequence as the call proceeds.
	next := make(map[string]*int64)
	err := journal.CheckSequences(current, func(actor string) *int64 {
		n, ok := next[actor]
		if !ok {
			n = new(int64(1))
			if h := j.actors[actor]; h != nil {
				*n = int64(len(h.entries)) + 1
			}
			next[actor] = n
		}
		return n
	})
	if err != nil {
		return err
	}
	err = journal.CheckOutcomes(current, func(actor, msgID string) (int64, bool) {
		if h := j.actors[actor]; h != nil {
			if k, ok := h.outcomes[msgID]; ok {
				return h.entries[k].Seq, true
			}
		}
		return 0, false
	})
	if err != nil {
		return err
	}

	for _, b := range current {
		for _, e := range b.Entries {
			h := j.history(e.Actor)
			e.Data = clone(e.Data)
			if e.Kind.IsOutcome() {
				h.outcomes[e.MsgID] = len(h.entries) // the only one: CheckOutcomes saw to it
			}
			h.entries = append(h.entries, e)
		}
		for _, cp := range b.Checkpoints {
			j.history(cp.Actor).saveCheckpoint(cp, j.keep)
		}
		if b.Horizon > 0 {
			j.horizons[b.Partition] = b.Horizon
		}
	}
	if len(fenced) > 0 {
		return &journal.FencedError{Partitions: fenced}
	}
	return nil
}

func (j *Journal) history(actor string) *history {
	h := j.actors[actor]
	if h == nil {
		h = &history{outcomes: make(map[string]int)}
		j.actors[actor] = h
	}
	return h
}

// saveCheckpoint inserts cp in Seq order, replacing one at the same Seq,
// and drops the oldest beyond keep.
func (h *history) saveCheckpoint(cp journal.Checkpoint, keep int) {
	cp.State = clone(cp.State)
	i, found := slices.BinarySearchFunc(h.checkpoints, cp.Seq, func(c journal.Checkpoint, seq int64) int {
		return cmp.Compare(c.Seq, seq)
	})
	if found {
		h.checkpoints[i] = cp
	} else {
		h.checkpoints = slices.Insert(h.checkpoints, i, cp)
	}
	if keep > 0 && len(h.checkpoints) > keep {
		h.checkpoints = slices.Delete(h.checkpoints, 0, len(h.checkpoints)-keep)
	}
}

// Read implements journal.Journal. fn runs without the journal's lock
// held, so it may call the journal.
func (j *Journal) Read(ctx context.Context, actor string, from int64, fn func(journal.Entry) error) error {
	j.mu.RLock()
	if j.closed {
		j.mu.RUnlock()
		return journal.ErrClosed
	}
	var es []journal.Entry
	if h := j.actors[actor]; h != nil {
		start := max(from, 1) - 1
		if start < int64(len(h.entries)) {
			es = slices.Clone(h.entries[start:])
		}
	}
	j.mu.RUnlock()

	for _, e := range es {
		if err := ctx.Err(); err != nil {
			return err
		}
		e.Data = clone(e.Data)
		if err := fn(e); err != nil {
			return err
		}
	}
	return nil
}

// view runs fn with actor's history, under the read lock, if the actor
// has one.
func (j *Journal) view(actor string, fn func(h *history)) error {
	j.mu.RLock()
	defer j.mu.RUnlock()
	if j.closed {
		return journal.ErrClosed
	}
	if h := j.actors[actor]; h != nil {
		fn(h)
	}
	return nil
}

// LastSeq implements journal.Journal.
func (j *Journal) LastSeq(ctx context.Context, actor string) (seq int64, err error) {
	err = j.view(actor, func(h *history) { seq = int64(len(h.entries)) })
	return seq, err
}

// Outcome implements journal.Journal.
func (j *Journal) Outcome(ctx context.Context, actor, msgID string) (e journal.Entry, ok bool, err error) {
	err = j.view(actor, func(h *history) {
		var i int
		if i, ok = h.outcomes[msgID]; ok {
			e = h.entries[i]
			e.Data = clone(e.Data)
		}
	})
	return e, ok, err
}

// LoadCheckpoint implements journal.Journal.
func (j *Journal) LoadCheckpoint(ctx context.Context, actor string, atOrBefore int64) (cp journal.Checkpoint, ok bool, err error) {
	err = j.view(actor, func(h *history) {
		for i := len(h.checkpoints) - 1; i >= 0 && !ok; i-- {
			if cp = h.checkpoints[i]; cp.Seq <= atOrBefore {
				cp.State, ok = clone(cp.State), true
			}
		}
	})
	if !ok {
		return journal.Checkpoint{}, false, err
	}
	return cp, true, nil
}

// Horizon implements journal.Journal.
func (j *Journal) Horizon(ctx context.Context, partition string) (int64, bool, error) {
	j.mu.RLock()
	defer j.mu.RUnlock()
	if j.closed {
		return 0, false, journal.ErrClosed
	}
	h, ok := j.horizons[partition]
	return h, ok, nil
}

// Epoch implements journal.Journal.
func (j *Journal) Epoch(ctx context.Context, partition string) (int64, error) {
	j.mu.RLock()
	defer j.mu.RUnlock()
	if j.closed {
		return 0, journal.ErrClosed
	}
	return j.epochs[partition], nil
}

// CompareAndSetEpoch implements journal.Journal. It refuses to move an
// epoch backward, which would unfence a zombie.
func (j *Journal) CompareAndSetEpoch(ctx context.Context, partition string, old, next int64) (bool, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if err := journal.BeginEpochMove(j.closed, partition, old, next); err != nil {
		return false, err
	}
	if j.epochs[partition] != old {
		return false, nil
	}
	j.epochs[partition] = next
	return true, nil
}

// Close drops everything. Later calls return journal.ErrClosed; closing
// again is a no-op.
func (j *Journal) Close() error {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.closed = true
	j.actors, j.epochs, j.horizons = nil, nil, nil
	return nil
}

func clone(b []byte) []byte {
	if b == nil {
		return nil
	}
	return slices.Clone(b)
}
