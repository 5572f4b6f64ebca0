package sqlite_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/postbox-dev/postbox/internal/sqlitedb"
	"github.com/postbox-dev/postbox/internal/testenv"
	"github.com/postbox-dev/postbox/journal"
	"github.com/postbox-dev/postbox/journal/internal/backendtest"
	"github.com/postbox-dev/postbox/journal/journaltest"
	"github.com/postbox-dev/postbox/journal/sqlite"
)

func TestConformance(t *testing.T)                   { conformance(t, journaltest.Defaults) }
func TestConformanceCompact(t *testing.T)            { conformance(t, journaltest.Compacting) }
func TestConformanceKeepAllCheckpoints(t *testing.T) { conformance(t, journaltest.KeepAll) }

// conformance runs the suite on journals in files of their own. Runs
// other than the defaults' commit with SyncNormal, for speed.
func conformance(t *testing.T, r journaltest.Retention) {
	opts := sqlite.Options{KeepCheckpoints: r.KeepCheckpoints, Compact: r.Compact}
	if r != journaltest.Defaults {
		opts.Synchronous = sqlite.SyncNormal
	}
	journaltest.RunStores(t, r.Features(), func(t *testing.T) string {
		return filepath.Join(t.TempDir(), "journal.db")
	}, func(t *testing.T, path string) journal.Journal {
		return mustOpen(t, path, opts)
	})
}

func mustOpen(t testing.TB, path string, opts sqlite.Options) *sqlite.Journal {
	return backendtest.Open(t, path, func(context.Context) (*sqlite.Journal, error) { return sqlite.Open(path, opts) })
}

func appendOK(t *testing.T, ctx context.Context, j journal.Journal, bs ...journal.Batch) {
	t.Helper()
	if err := j.Append(ctx, bs...); err != nil {
		t.Fatalf("Append: %v", err)
	}
}

func TestOpenRejectsBadOptions(t *testing.T) {
	_, err := sqlite.Open(filepath.Join(t.TempDir(), "j.db"), sqlite.Options{Synchronous: "OFF"})
	if err == nil || !strings.Contains(err.Error(), "Options.Synchronous") {
		t.Fatalf("Open with synchronous OFF: err = %v, want one naming Options.Synchronous", err)
	}
	if _, err := sqlite.Open(t.TempDir(), sqlite.Options{}); err == nil {
		t.Fatal("Open of a directory succeeded")
	}
}

func TestReopenKeepsEverything(t *testing.T) {
	ctx := backendtest.Context(t)
	path := filepath.Join(t.TempDir(), "j.db")
	j := mustOpen(t, path, sqlite.Options{Compact: true})
	e, err := journal.AcquireEpoch(ctx, j, "p0")
	if err != nil {
		t.Fatal(err)
	}
	appendOK(t, ctx, j, journal.Batch{Partition: "p0", Epoch: e,
		Entries: []journal.Entry{
			backendtest.Entry("a/1", 1, journal.KindAttempt, "m1"),
			backendtest.Entry("a/1", 2, journal.KindComplete, "m1"),
		},
		Checkpoints: []journal.Checkpoint{{Actor: "a/1", Seq: 2, State: []byte("s2")}},
	})
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}

	j = mustOpen(t, path, sqlite.Options{Compact: true})
	if got, err := j.Epoch(ctx, "p0"); err != nil || got != e {
		t.Fatalf("Epoch = %d, %v; want %d", got, err, e)
	}
	if seq, err := j.LastSeq(ctx, "a/1"); err != nil || seq != 2 {
		t.Fatalf("LastSeq = %d, %v; want 2", seq, err)
	}
	if o, ok, err := j.Outcome(ctx, "a/1", "m1"); err != nil || !ok || o.Seq != 2 {
		t.Fatalf("Outcome = %+v, %v, %v; want seq 2", o, ok, err)
	}
	if cp, ok, err := j.LoadCheckpoint(ctx, "a/1", journal.MaxSeq); err != nil || !ok || string(cp.State) != "s2" {
		t.Fatalf("LoadCheckpoint = %+v, %v, %v", cp, ok, err)
	}
	appendOK(t, ctx, j, journal.Batch{Partition: "p0", Epoch: e, Entries: []journal.Entry{backendtest.Entry("a/1", 3, journal.KindAttempt, "m2")}})
}

func TestCompaction(t *testing.T) {
	ctx := backendtest.Context(t)
	path := filepath.Join(t.TempDir(), "j.db")
	j := mustOpen(t, path, sqlite.Options{Compact: true, KeepCheckpoints: 2})
	const a = "counter/1"
	// Ten messages, each an attempt, an effect and a completion, with a
	// checkpoint after each completion: seqs 3, 6, ..., 30.
	var seq int64
	for m := range 10 {
		msg := fmt.Sprintf("m%d", m)
		es := []journal.Entry{
			backendtest.Entry(a, seq+1, journal.KindAttempt, msg),
			backendtest.Entry(a, seq+2, journal.KindEffect, msg),
			backendtest.Entry(a, seq+3, journal.KindComplete, msg),
		}
		seq += 3
		appendOK(t, ctx, j, journal.Batch{Partition: "p0", Entries: es,
			Checkpoints: []journal.Checkpoint{{Actor: a, Seq: seq, State: fmt.Appendf(nil, "s%d", seq)}}})
	}
	// Kept checkpoints: 27 and 30. At or below 27 only outcomes remain,
	// without data; above it, everything.
	db := testenv.SQLite(t, path)
	var attempts, withData, outcomes int
	err := db.QueryRow(`SELECT
		count(*) FILTER (WHERE kind IN (1, 2)),
		count(*) FILTER (WHERE kind IN (3, 4) AND data IS NOT NULL),
		count(*) FILTER (WHERE kind IN (3, 4))
		FROM journal_entries WHERE actor = ? AND seq <= 27`, a).Scan(&attempts, &withData, &outcomes)
	if err != nil {
		t.Fatal(err)
	}
	if attempts != 0 || withData != 0 || outcomes != 9 {
		t.Fatalf("at or below seq 27: %d attempts/effects, %d outcomes with data, %d outcomes; want 0, 0, 9",
			attempts, withData, outcomes)
	}
	var checkpoints int
	if err := db.QueryRow(`SELECT count(*) FROM journal_checkpoints WHERE actor = ?`, a).Scan(&checkpoints); err != nil {
		t.Fatal(err)
	}
	if checkpoints != 2 {
		t.Fatalf("%d checkpoints kept, want 2", checkpoints)
	}

	for m := range 10 {
		o, ok, err := j.Outcome(ctx, a, fmt.Sprintf("m%d", m))
		if err != nil || !ok || o.Seq != int64(3*m+3) || o.Kind != journal.KindComplete {
			t.Fatalf("Outcome(m%d) = %+v, %v, %v; want the completion at %d", m, o, ok, err, 3*m+3)
		}
		if wantData := o.Seq > 27; (o.Data != nil) != wantData {
			t.Fatalf("Outcome(m%d) data = %q; want data only above seq 27", m, o.Data)
		}
	}
	var got []int64
	err = j.Read(ctx, a, 20, func(e journal.Entry) error {
		got = append(got, e.Seq)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if want := []int64{21, 24, 27, 28, 29, 30}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("Read from 20 after compaction = %v, want %v", got, want)
	}

	// A checkpoint right after an attempt: the attempt, being the last
	// entry, survives compaction, and the history continues.
	appendOK(t, ctx, j, journal.Batch{Partition: "p0",
		Entries:     []journal.Entry{backendtest.Entry(a, 31, journal.KindAttempt, "m10")},
		Checkpoints: []journal.Checkpoint{{Actor: a, Seq: 31}}})
	appendOK(t, ctx, j, journal.Batch{Partition: "p0", Checkpoints: []journal.Checkpoint{{Actor: a, Seq: 31, State: []byte("again")}}})
	appendOK(t, ctx, j, journal.Batch{Partition: "p0", Entries: []journal.Entry{backendtest.Entry(a, 32, journal.KindComplete, "m10")},
		Checkpoints: []journal.Checkpoint{{Actor: a, Seq: 32}}})
	if seq, err := j.LastSeq(ctx, a); err != nil || seq != 32 {
		t.Fatalf("LastSeq = %d, %v; want 32", seq, err)
	}
	if err := j.Append(ctx, journal.Batch{Partition: "p0", Entries: []journal.Entry{backendtest.Entry(a, 32, journal.KindAttempt, "m11")}}); !errors.Is(err, journal.ErrSequence) {
		t.Fatalf("rewriting seq 32 after compaction: err = %v, want ErrSequence", err)
	}
}

// Two Journals on one file stand for two worker processes.
func TestTwoProcessesFence(t *testing.T) {
	ctx := backendtest.Context(t)
	path := filepath.Join(t.TempDir(), "j.db")
	j1 := mustOpen(t, path, sqlite.Options{})
	j2 := mustOpen(t, path, sqlite.Options{})
	const a = "counter/1"

	e1, err := journal.AcquireEpoch(ctx, j1, "p0")
	if err != nil {
		t.Fatal(err)
	}
	appendOK(t, ctx, j1, journal.Batch{Partition: "p0", Epoch: e1, Entries: []journal.Entry{backendtest.Entry(a, 1, journal.KindComplete, "m1")}})

	// Process 2 takes the partition over; process 1 is now a zombie.
	e2, err := journal.AcquireEpoch(ctx, j2, "p0")
	if err != nil {
		t.Fatal(err)
	}
	if e2 != e1+1 {
		t.Fatalf("second process acquired epoch %d, want %d", e2, e1+1)
	}
	err = j1.Append(ctx, journal.Batch{Partition: "p0", Epoch: e1, Entries: []journal.Entry{backendtest.Entry(a, 2, journal.KindComplete, "m2")}})
	if !journal.Fenced(err, "p0") {
		t.Fatalf("zombie append: err = %v, want p0 fenced", err)
	}
	if o, ok, err := j2.Outcome(ctx, a, "m1"); err != nil || !ok || o.Seq != 1 {
		t.Fatalf("new owner's Outcome(m1) = %+v, %v, %v", o, ok, err)
	}
	appendOK(t, ctx, j2, journal.Batch{Partition: "p0", Epoch: e2, Entries: []journal.Entry{backendtest.Entry(a, 2, journal.KindComplete, "m2")}})
	if seq, err := j1.LastSeq(ctx, a); err != nil || seq != 2 {
		t.Fatalf("first process sees LastSeq %d, %v; want 2", seq, err)
	}

	// Racing acquisitions from both processes hand out distinct epochs.
	var mu sync.Mutex
	seen := map[int64]bool{}
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			j := j1
			if i%2 == 1 {
				j = j2
			}
			e, err := journal.AcquireEpoch(ctx, j, "p1")
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			defer mu.Unlock()
			if seen[e] {
				t.Errorf("epoch %d acquired twice", e)
			}
			seen[e] = true
		}()
	}
	wg.Wait()

	// Racing appends to one actor from both processes: one wins each round.
	for round := int64(3); round < 13; round++ {
		errs := make([]error, 2)
		var wg sync.WaitGroup
		for i, j := range []*sqlite.Journal{j1, j2} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs[i] = j.Append(ctx, journal.Batch{Partition: "p2", Entries: []journal.Entry{backendtest.Entry(a, round, journal.KindAttempt, "m")}})
			}()
		}
		wg.Wait()
		if (errs[0] == nil) == (errs[1] == nil) {
			t.Fatalf("round %d: errs = %v, want exactly one winner", round, errs)
		}
		for _, err := range errs {
			if err != nil && !errors.Is(err, journal.ErrSequence) {
				t.Fatalf("round %d: loser got %v, want ErrSequence", round, err)
			}
		}
	}
}

func TestOpenConcurrentlyCreatesSchemaOnce(t *testing.T) {
	path := filepath.Join(t.TempDir(), "j.db")
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			j, err := sqlite.Open(path, sqlite.Options{})
			if err != nil {
				t.Error(err)
				return
			}
			j.Close()
		}()
	}
	wg.Wait()
}

func TestQueriesUseIndexes(t *testing.T) {
	path := filepath.Join(t.TempDir(), "j.db")
	mustOpen(t, path, sqlite.Options{})
	db := testenv.SQLite(t, path)
	for name, q := range sqlite.Queries {
		args := make([]any, strings.Count(q, "?"))
		for i := range args {
			args[i] = 1
		}
		if strings.Contains(q, "?2") { // numbered parameters
			args = args[:2]
		}
		rows, err := db.Query("EXPLAIN QUERY PLAN "+q, args...)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		var plan strings.Builder
		for rows.Next() {
			var id, parent, unused int
			var detail string
			if err := rows.Scan(&id, &parent, &unused, &detail); err != nil {
				t.Fatal(err)
			}
			plan.WriteString(detail + "; ")
		}
		rows.Close()
		p := strings.ReplaceAll(plan.String(), "SCAN CONSTANT ROW", "")
		if strings.Contains(p, "SCAN") || strings.Contains(p, "TEMP B-TREE") {
			t.Errorf("%s scans or sorts: %s", name, p)
		}
	}
}

// A file made before outcomes were unique has a plain outcome index: Open
// makes it unique, under the same name, or says what to do when the file
// already holds a message with two outcomes.
func TestOpenMakesOutcomeIndexUnique(t *testing.T) {
	ctx := backendtest.Context(t)
	oldFile := func(t *testing.T, dup bool) string {
		path := filepath.Join(t.TempDir(), "j.db")
		j := mustOpen(t, path, sqlite.Options{})
		appendOK(t, ctx, j, journal.Batch{Partition: "p0", Entries: []journal.Entry{
			backendtest.Entry("a/1", 1, journal.KindComplete, "m"), backendtest.Entry("a/1", 2, journal.KindAttempt, "m"),
		}})
		j.Close()
		db := testenv.SQLite(t, path)
		stmts := []string{`DROP INDEX journal_entries_outcome`,
			`CREATE INDEX journal_entries_outcome ON journal_entries (actor, msg_id) WHERE kind IN (3, 4)`}
		if dup {
			stmts = append(stmts, `UPDATE journal_entries SET kind = 3 WHERE seq = 2`)
		}
		for _, q := range stmts {
			if _, err := db.Exec(q); err != nil {
				t.Fatalf("%s: %v", q, err)
			}
		}
		db.Close()
		return path
	}

	path := oldFile(t, false)
	j := mustOpen(t, path, sqlite.Options{})
	var sqlText string
	if err := testenv.SQLite(t, path).QueryRow(`SELECT sql FROM sqlite_master WHERE name = 'journal_entries_outcome'`).Scan(&sqlText); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(sqlText, "CREATE UNIQUE INDEX") {
		t.Fatalf("outcome index after Open: %s, want a unique one", sqlText)
	}
	err := j.Append(ctx, journal.Batch{Partition: "p0", Entries: []journal.Entry{backendtest.Entry("a/1", 3, journal.KindDeadLetter, "m")}})
	if !errors.Is(err, journal.ErrDuplicateOutcome) {
		t.Fatalf("a second outcome after the upgrade: %v, want ErrDuplicateOutcome", err)
	}

	_, err = sqlite.Open(oldFile(t, true), sqlite.Options{})
	if err == nil || !strings.Contains(err.Error(), "more than one outcome") {
		t.Fatalf("Open of a file with a message of two outcomes: %v, want an error saying so", err)
	}
}

// A file made before partitions had horizons has no horizon column: Open
// adds it, partitions read as having none, and Append stores them, for a
// partition with an epoch row and for one without.
func TestOpenAddsHorizonColumn(t *testing.T) {
	ctx := backendtest.Context(t)
	path := filepath.Join(t.TempDir(), "j.db")
	// The previous version's file: today's, without the column.
	old := mustOpen(t, path, sqlite.Options{})
	for range 2 {
		if _, err := journal.AcquireEpoch(ctx, old, "p0"); err != nil {
			t.Fatal(err)
		}
	}
	appendOK(t, ctx, old, journal.Batch{Partition: "p0", Epoch: 2, Entries: []journal.Entry{{Actor: "a/1", Seq: 1, Kind: journal.KindComplete, MsgID: "m1"}}})
	old.Close()
	db := testenv.SQLite(t, path)
	if _, err := db.Exec(`ALTER TABLE journal_epochs DROP COLUMN horizon`); err != nil {
		t.Fatal(err)
	}
	db.Close()

	j := mustOpen(t, path, sqlite.Options{})
	if e, err := j.Epoch(ctx, "p0"); err != nil || e != 2 {
		t.Fatalf("Epoch(p0) after the upgrade = %d, %v; want 2", e, err)
	}
	for _, p := range []string{"p0", "p1"} {
		if h, ok, err := j.Horizon(ctx, p); err != nil || ok || h != 0 {
			t.Fatalf("Horizon(%s) after the upgrade = %d, %v, %v; want none", p, h, ok, err)
		}
	}
	appendOK(t, ctx, j,
		journal.Batch{Partition: "p0", Epoch: 2, Entries: []journal.Entry{backendtest.Entry("a/1", 2, journal.KindAttempt, "m2")}, Horizon: 1<<62 + 1},
		journal.Batch{Partition: "p1", Horizon: 7})
	if e, err := journal.AcquireEpoch(ctx, j, "p1"); err != nil || e != 1 {
		t.Fatalf("AcquireEpoch(p1) after its horizon made its row = %d, %v; want 1", e, err)
	}
	j.Close()

	j = mustOpen(t, path, sqlite.Options{})
	for p, want := range map[string]int64{"p0": 1<<62 + 1, "p1": 7} {
		if h, ok, err := j.Horizon(ctx, p); err != nil || !ok || h != want {
			t.Fatalf("Horizon(%s) after reopening = %d, %v, %v; want %d", p, h, ok, err, want)
		}
	}
	if e, err := j.Epoch(ctx, "p0"); err != nil || e != 2 {
		t.Fatalf("Epoch(p0) = %d, %v; want 2", e, err)
	}
}

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
