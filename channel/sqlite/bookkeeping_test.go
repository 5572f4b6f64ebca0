package sqlite

import (
	"context"
	"database/sql"
	"path/filepath"
	"testing"
)

// Consumer bookkeeping commits with synchronous=NORMAL on a FULL mailbox,
// and the connection goes back to the pool with FULL for publishes.
func TestBookkeepingIsRelaxedAndPublishesStayFull(t *testing.T) {
	m, err := Open(filepath.Join(t.TempDir(), "m.db"), Options{Partitions: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	m.db.SetMaxOpenConns(1) // every transaction below shares one connection
	ctx := context.Background()
	level := func(tx *sql.Tx) (n int) {
		if err := tx.QueryRow("PRAGMA synchronous").Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	var relaxed, full int
	if err := m.writeBookkeeping(ctx, func(tx *sql.Tx) error { relaxed = level(tx); return nil }); err != nil {
		t.Fatal(err)
	}
	if err := m.write(ctx, func(tx *sql.Tx) error { full = level(tx); return nil }); err != nil {
		t.Fatal(err)
	}
	if relaxed != 1 || full != 2 {
		t.Errorf("synchronous = %d in bookkeeping and %d after it, want 1 (NORMAL) and 2 (FULL)", relaxed, full)
	}

	n, err := Open(filepath.Join(t.TempDir(), "n.db"), Options{Partitions: 1, Synchronous: SyncNormal})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	if err := n.write(ctx, func(tx *sql.Tx) error { full = level(tx); return nil }); err != nil {
		t.Fatal(err)
	}
	if full != 1 {
		t.Errorf("a NORMAL mailbox writes with synchronous = %d", full)
	}
}
