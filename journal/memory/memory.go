// Package memory is an in-process journal.Journal: maps behind a mutex.
// It is for tests and for actors whose history may die with the process;
// nothing survives Close, and it cannot be shared between processes.
package memory

import (
	"cmp"
	"context"
	"fmt"
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
const DefaultKeepCheckpoints = 3

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

	var fenced []string
	current := make([]bool, len(batches))
	for i, b := range batches {
		if j.epochs[b.Partition] == b.Epoch {
			current[i] = true
		} else if !slices.Contains(fenced, b.Partition) {
			fenced = append(fenced, b.Partition)
		}
	}

	// next is each touched actor's next sequence as the call proceeds.
	next := make(map[string]int64)
	nextOf := func(actor string) int64 {
		n, ok := next[actor]
		if !ok {
			n = 1
			if h := j.actors[actor]; h != nil {
				n = int64(len(h.entries)) + 1
			}
			next[actor] = n
		}
		return n
	}
	for i, b := range batches {
		if !current[i] {
			continue
		}
		for _, e := range b.Entries {
			if want := nextOf(e.Actor); e.Seq != want {
				return fmt.Errorf("%w: actor %q: entry seq %d, want %d: reload the actor's history before appending",
					journal.ErrSequence, e.Actor, e.Seq, want)
			}
			next[e.Actor]++
		}
	}
	for i, b := range batches {
		if !current[i] {
			continue
		}
		for _, cp := range b.Checkpoints {
			if last := nextOf(cp.Actor) - 1; cp.Seq > last {
				return fmt.Errorf("%w: actor %q: checkpoint at seq %d is past its last entry %d",
					journal.ErrSequence, cp.Actor, cp.Seq, last)
			}
		}
	}
	if err := j.checkOutcomes(batches, current); err != nil {
		return err
	}

	for i, b := range batches {
		if !current[i] {
			continue
		}
		for _, e := range b.Entries {
			h := j.history(e.Actor)
			e.Data = clone(e.Data)
			if e.Kind.IsOutcome() {
				h.outcomes[e.MsgID] = len(h.entries) // the only one: checkOutcomes saw to it
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

// checkOutcomes refuses a second outcome of one message of an actor, in
// the store or in the call. j.mu must be held.
func (j *Journal) checkOutcomes(batches []journal.Batch, current []bool) error {
	var inCall map[[2]string]int64 // (actor, msgID) -> seq, made at the first outcome
	for i, b := range batches {
		if !current[i] {
			continue
		}
		for _, e := range b.Entries {
			if !e.Kind.IsOutcome() {
				continue
			}
			if h := j.actors[e.Actor]; h != nil {
				if k, ok := h.outcomes[e.MsgID]; ok {
					return duplicateOutcome(e, h.entries[k].Seq)
				}
			}
			if inCall == nil {
				inCall = make(map[[2]string]int64)
			}
			key := [2]string{e.Actor, e.MsgID}
			if seq, ok := inCall[key]; ok {
				return duplicateOutcome(e, seq)
			}
			inCall[key] = e.Seq
		}
	}
	return nil
}

func duplicateOutcome(e journal.Entry, first int64) error {
	return fmt.Errorf("%w: actor %q message %q: %s at seq %d, but seq %d is its outcome already; nothing of this Append was written",
		journal.ErrDuplicateOutcome, e.Actor, e.MsgID, e.Kind, e.Seq, first)
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

// LastSeq implements journal.Journal.
func (j *Journal) LastSeq(ctx context.Context, actor string) (int64, error) {
	j.mu.RLock()
	defer j.mu.RUnlock()
	if j.closed {
		return 0, journal.ErrClosed
	}
	if h := j.actors[actor]; h != nil {
		return int64(len(h.entries)), nil
	}
	return 0, nil
}

// Outcome implements journal.Journal.
func (j *Journal) Outcome(ctx context.Context, actor, msgID string) (journal.Entry, bool, error) {
	j.mu.RLock()
	defer j.mu.RUnlock()
	if j.closed {
		return journal.Entry{}, false, journal.ErrClosed
	}
	h := j.actors[actor]
	if h == nil {
		return journal.Entry{}, false, nil
	}
	i, ok := h.outcomes[msgID]
	if !ok {
		return journal.Entry{}, false, nil
	}
	e := h.entries[i]
	e.Data = clone(e.Data)
	return e, true, nil
}

// LoadCheckpoint implements journal.Journal.
func (j *Journal) LoadCheckpoint(ctx context.Context, actor string, atOrBefore int64) (journal.Checkpoint, bool, error) {
	j.mu.RLock()
	defer j.mu.RUnlock()
	if j.closed {
		return journal.Checkpoint{}, false, journal.ErrClosed
	}
	h := j.actors[actor]
	if h == nil {
		return journal.Checkpoint{}, false, nil
	}
	for i := len(h.checkpoints) - 1; i >= 0; i-- {
		if cp := h.checkpoints[i]; cp.Seq <= atOrBefore {
			cp.State = clone(cp.State)
			return cp, true, nil
		}
	}
	return journal.Checkpoint{}, false, nil
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
	if err := journal.ValidateEpochMove(partition, old, next); err != nil {
		return false, err
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.closed {
		return false, journal.ErrClosed
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
