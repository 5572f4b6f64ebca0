package sqlite_test

import (
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/postbox-dev/postbox/internal/sqlitedb"
	"github.com/postbox-dev/postbox/journal"
	"github.com/postbox-dev/postbox/journal/sqlite"
)

const (
	benchActors     = 1000
	benchPartitions = 16
	benchDataSize   = 200
	rawRowsPerTx    = 500
)

// BenchmarkAppend measures group commit: each op is one Append of one
// entry for each of 1000 actors, spread over 16 partitions, with
// synchronous=FULL. Next to the journal's rows/s it reports raw-rows/s, the
// reference: as many rows inserted into a bare WITHOUT ROWID table of its
// own file, one prepared INSERT per row, 500 rows per transaction, actors
// round-robin; and %raw, the journal's share of that. The two alternate op
// by op, so that other load on the machine slows both alike.
//
// Small b.N flatter the journal (its larger WAL absorbs short runs);
// compare with at least -benchtime=100x.
func BenchmarkAppend(b *testing.B) {
	for _, tc := range []struct {
		name  string
		kinds []journal.Kind
	}{
		{"attempts", []journal.Kind{journal.KindAttempt}},
		// Half the entries are outcomes and so also go into the outcome
		// index, as in a host that journals an attempt and a completion.
		{"attempt+complete", []journal.Kind{journal.KindAttempt, journal.KindComplete}},
	} {
		b.Run(tc.name, func(b *testing.B) { benchAppend(b, tc.kinds) })
	}
}

func benchAppend(b *testing.B, kinds []journal.Kind) {
	ctx := context.Background()
	j, err := sqlite.Open(filepath.Join(b.TempDir(), "journal.db"), sqlite.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer j.Close()
	actors := make([]string, benchActors)
	for i := range actors {
		actors[i] = fmt.Sprintf("counter/%d", i)
	}
	batches := make([]journal.Batch, benchPartitions)
	for p := range batches {
		name := fmt.Sprintf("p%d", p)
		e, err := journal.AcquireEpoch(ctx, j, name)
		if err != nil {
			b.Fatal(err)
		}
		batches[p] = journal.Batch{Partition: name, Epoch: e}
	}
	data := make([]byte, benchDataSize)
	raw := newRawInserter(b, actors, data)

	var journalTime, rawTime time.Duration
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		for p := range batches {
			batches[p].Entries = batches[p].Entries[:0]
		}
		seq := int64(i + 1)
		kind := kinds[i%len(kinds)]
		msg := fmt.Sprintf("m%d", i/len(kinds))
		for a, actor := range actors {
			p := &batches[a%benchPartitions]
			p.Entries = append(p.Entries, journal.Entry{Actor: actor, Seq: seq, Kind: kind, MsgID: msg, Data: data})
		}
		start := time.Now()
		if err := j.Append(ctx, batches...); err != nil {
			b.Fatal(err)
		}
		journalTime += time.Since(start)

		b.StopTimer()
		rawTime += raw.insert(b, benchActors)
		b.StartTimer()
	}
	b.StopTimer()

	rows := float64(b.N * benchActors)
	rate, rawRate := rows/journalTime.Seconds(), rows/rawTime.Seconds()
	b.ReportMetric(rate, "rows/s")
	b.ReportMetric(rawRate, "raw-rows/s")
	b.ReportMetric(100*rate/rawRate, "%raw")
}

// rawInserter is the reference writer: plain batched INSERTs into a fresh
// WAL file with synchronous=FULL.
type rawInserter struct {
	db      *sql.DB
	stmt    *sql.Stmt
	actors  []string
	payload []byte
	n       int // rows inserted so far
}

func newRawInserter(b *testing.B, actors []string, payload []byte) *rawInserter {
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
	return &rawInserter{db: db, stmt: stmt, actors: actors, payload: payload}
}

// insert inserts rows more rows, rawRowsPerTx per transaction, and returns
// the time it took.
func (r *rawInserter) insert(b *testing.B, rows int) time.Duration {
	start := time.Now()
	for end := r.n + rows; r.n < end; {
		tx, err := r.db.Begin()
		if err != nil {
			b.Fatal(err)
		}
		txStmt := tx.Stmt(r.stmt)
		for stop := min(r.n+rawRowsPerTx, end); r.n < stop; r.n++ {
			actor := r.actors[r.n%len(r.actors)]
			seq := int64(r.n/len(r.actors) + 1)
			if _, err := txStmt.Exec(actor, seq, 1, "m", r.payload); err != nil {
				b.Fatal(err)
			}
		}
		if err := tx.Commit(); err != nil {
			b.Fatal(err)
		}
	}
	return time.Since(start)
}
