package sqlitedb

import (
	"path/filepath"
	"testing"
)

func TestOpenSetsWALAndSynchronous(t *testing.T) {
	db, err := Open(filepath.Join(t.TempDir(), "x.db"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var mode string
	var sync int
	if err := db.QueryRow("PRAGMA journal_mode").Scan(&mode); err != nil {
		t.Fatal(err)
	}
	if err := db.QueryRow("PRAGMA synchronous").Scan(&sync); err != nil {
		t.Fatal(err)
	}
	if mode != "wal" || sync != 2 {
		t.Fatalf("journal_mode=%s synchronous=%d, want wal and 2 (FULL)", mode, sync)
	}
	if _, err := Open(filepath.Join(t.TempDir(), "y.db"), Options{Synchronous: "OFF"}); err == nil {
		t.Fatal("synchronous OFF accepted")
	}
}

// Processes that open one new file at once race to turn on WAL, which
// takes the file's lock: each must wait on the busy timeout, not fail.
func TestConcurrentOpensOfANewFileWait(t *testing.T) {
	for round := range 20 {
		path := filepath.Join(t.TempDir(), "x.db")
		errs := make(chan error, 4)
		for range 4 {
			go func() {
				db, err := Open(path, Options{})
				if err == nil {
					_, err = db.Exec("CREATE TABLE IF NOT EXISTS t (x INTEGER)")
					db.Close()
				}
				errs <- err
			}()
		}
		for range 4 {
			if err := <-errs; err != nil {
				t.Fatalf("round %d: %v", round, err)
			}
		}
	}
}
