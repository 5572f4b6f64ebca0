package journaltest

import (
	"sync"
	"testing"

	"github.com/postbox-dev/postbox/journal"
)

// Retention is what a journal keeps, as a backend's options say it:
// KeepCheckpoints as they take it (0 for the default, negative for every
// checkpoint) and whether it compacts (see package journal).
type Retention struct {
	KeepCheckpoints int
	Compact         bool
}

// The retentions a backend runs the suite under: its defaults,
// compaction keeping two checkpoints, and every checkpoint kept.
var (
	Defaults   = Retention{}
	Compacting = Retention{KeepCheckpoints: 2, Compact: true}
	KeepAll    = Retention{KeepCheckpoints: -1}
)

// Features returns the Features of a journal that keeps what r says, and
// journal.DefaultKeepCheckpoints by default.
func (r Retention) Features() Features {
	f := Features{KeepCheckpoints: max(r.KeepCheckpoints, 0), Compacts: r.Compact}
	if r.KeepCheckpoints == 0 {
		f.KeepCheckpoints = journal.DefaultKeepCheckpoints
	}
	return f
}

// RunStores runs the suite on journals that each have a store of their
// own and outlive Close: fresh returns a new, empty store for t (a file,
// a schema, a namespace), and open opens a journal on one. Every journal
// opened is closed when its test ends. Features.Reopen and Features.Share
// open a journal's store again.
func RunStores[S any](t *testing.T, f Features, fresh func(t *testing.T) S, open func(t *testing.T, store S) journal.Journal) {
	var stores sync.Map // journal.Journal -> S
	openOn := func(t *testing.T, store S) journal.Journal {
		t.Helper()
		j := open(t, store)
		if j == nil {
			t.Fatal("journaltest: open returned a nil journal")
		}
		t.Cleanup(func() { _ = j.Close() })
		stores.Store(j, store)
		return j
	}
	again := func(t *testing.T, j journal.Journal) journal.Journal {
		t.Helper()
		store, ok := stores.Load(j)
		if !ok {
			t.Fatal("journaltest: the journal to open again was not opened by RunStores")
		}
		return openOn(t, store.(S))
	}
	f.Reopen, f.Share = again, again
	Run(t, f, func(t *testing.T) journal.Journal { return openOn(t, fresh(t)) })
}
