package sqlite_test

import (
	"path/filepath"
	"sync"
	"testing"

	"github.com/postbox-dev/postbox/journal"
	"github.com/postbox-dev/postbox/journal/journaltest"
	"github.com/postbox-dev/postbox/journal/sqlite"
)

// opener opens journals in fresh files and remembers each file, so that
// reopen can find it again.
type opener struct {
	opts  sqlite.Options
	paths sync.Map // journal.Journal -> path
}

func (o *opener) open(t *testing.T) journal.Journal {
	t.Helper()
	path := filepath.Join(t.TempDir(), "journal.db")
	return o.openPath(t, path)
}

func (o *opener) openPath(t *testing.T, path string) journal.Journal {
	t.Helper()
	j, err := sqlite.Open(path, o.opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { j.Close() })
	o.paths.Store(journal.Journal(j), path)
	return j
}

func (o *opener) reopen(t *testing.T, j journal.Journal) journal.Journal {
	t.Helper()
	path, ok := o.paths.Load(j)
	if !ok {
		t.Fatal("reopen: journal was not opened by this opener")
	}
	return o.openPath(t, path.(string))
}

func TestConformance(t *testing.T) {
	o := &opener{}
	journaltest.Run(t, journaltest.Features{
		KeepCheckpoints: sqlite.DefaultKeepCheckpoints,
		Reopen:          o.reopen,
		Share:           o.reopen,
	}, o.open)
}

func TestConformanceCompact(t *testing.T) {
	o := &opener{opts: sqlite.Options{Compact: true, KeepCheckpoints: 2, Synchronous: sqlite.SyncNormal}}
	journaltest.Run(t, journaltest.Features{
		KeepCheckpoints: 2,
		Compacts:        true,
		Reopen:          o.reopen,
		Share:           o.reopen,
	}, o.open)
}

func TestConformanceKeepAllCheckpoints(t *testing.T) {
	o := &opener{opts: sqlite.Options{KeepCheckpoints: -1, Synchronous: sqlite.SyncNormal}}
	journaltest.Run(t, journaltest.Features{Reopen: o.reopen, Share: o.reopen}, o.open)
}
