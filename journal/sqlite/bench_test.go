package sqlite_test

import (
	"database/sql"
	"path/filepath"
	"testing"
	"time"

	"github.com/postbox-dev/postbox/internal/sqlitedb"
	"github.com/postbox-dev/postbox/journal"
	"github.com/postbox-dev/postbox/journal/journaltest"
	"github.com/postbox-dev/postbox/journal/sqlite"
)

// rawRowsPerTx is how many rows the reference commits at a time.
const rawRowsPerTx = 500

// BenchmarkAppend measures group commit with synchronous=FULL, as
// journaltest.BenchAppend describes. Its reference writes the same rows
// into a bare WITHOUT ROWID table of its own file, one prepared INSERT per
// row, 500 rows per transaction. Small b.N flatter the journal (its larger
// WAL absorbs short runs); compare with at least -benchtime=100x.
func BenchmarkAppend(b *testing.B) {
	journaltest.BenchAppend(b, func(b *testing.B) journal.Journal {
		return mustOpen(b, filepath.Join(b.TempDir(), "journal.db"), sqlite.Options{})
	}, func(b *testing.B) journaltest.Reference {
		raw := newRawInserter(b)
		return func(batches []journal.Batch) time.Duration { return raw.insert(b, batches) }
	})
}

// rawInserter is the reference writer: plain batched INSERTs into a fresh
// WAL file with synchronous=FULL.
type rawInserter struct {
	db   *sql.DB
	stmt *sql.Stmt
}

func newRawInserter(b *testing.B) *rawInserter {
	db, err := sqlitedb.Open(filepath.Join(b.TempDir(), "raw.db"), sqlitedb.Options{Synchronous: sqlitedb.SyncFull})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { db.Close() })
	if _, err := db.Exec(`CREATE TABLE raw (actor TEXT, seq INTEGER, kind INTEGER, msg_id TEXT, payload BLOB,
		PRIMARY KEY (actor, seq)) WITHOUT ROWID`); err != nil {
		b.Fatal(err)
	}
	stmt, err := db.Prepare(`INSERT INTO raw (actor, seq, kind, msg_id, payload) VALUES (?, ?, ?, ?, ?)`)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { stmt.Close() })
	return &rawInserter{db: db, stmt: stmt}
}

// insert inserts the entries of batches, rawRowsPerTx per transaction, and
// returns the time it took.
func (r *rawInserter) insert(b *testing.B, batches []journal.Batch) time.Duration {
	var es []journal.Entry
	for _, bt := range batches {
		es = append(es, bt.Entries...)
	}
	start := time.Now()
	for len(es) > 0 {
		tx, err := r.db.Begin()
		if err != nil {
			b.Fatal(err)
		}
		txStmt := tx.Stmt(r.stmt)
		n := min(rawRowsPerTx, len(es))
		for _, e := range es[:n] {
			if _, err := txStmt.Exec(e.Actor, e.Seq, int64(e.Kind), e.MsgID, e.Data); err != nil {
				b.Fatal(err)
			}
		}
		if err := tx.Commit(); err != nil {
			b.Fatal(err)
		}
		es = es[n:]
	}
	return time.Since(start)
}
