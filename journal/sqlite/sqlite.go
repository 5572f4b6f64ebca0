// Package sqlite is a journal.Journal in a SQLite file.
//
// Every Append is one write transaction, whatever the number of batches and
// actors in it: callers group many actors' writes into one call, and pay
// one commit (one fsync with SyncFull) for all of them. Several processes
// on one host may share the file: SQLite's WAL lets readers run beside the
// writer, and writers take the write lock up front, queueing on a busy
// timeout. Tables are prefixed journal_, so the same file can also hold a
// SQLite mailbox and its acks can commit together with the journal.
//
// What it does not give: sharing across hosts (WAL needs shared memory, so
// keep the file on a local file system, not NFS or SMB), and with
// SyncNormal, durability of the last Appends across power loss.
package sqlite

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/postbox-dev/postbox/internal/sqlitedb"
	"github.com/postbox-dev/postbox/journal"
	"github.com/postbox-dev/postbox/journal/internal/pages"
	"github.com/postbox-dev/postbox/journal/internal/sqlreads"
)

// Synchronous is SQLite's synchronous setting: how durable a commit is.
type Synchronous = sqlitedb.Synchronous

const (
	// SyncFull fsyncs on every commit: an Append that returned survives
	// power loss.
	SyncFull = sqlitedb.SyncFull
	// SyncNormal fsyncs only at WAL checkpoints: an Append that returned
	// survives a process crash, but the last ones may be lost on power loss.
	SyncNormal = sqlitedb.SyncNormal
)

// DefaultKeepCheckpoints is what Options.KeepCheckpoints 0 means.
const DefaultKeepCheckpoints = journal.DefaultKeepCheckpoints

// Options tune Open. The zero value is ready to use.
type Options struct {
	// Synchronous says how durable a commit is. Defaults to SyncFull.
	Synchronous Synchronous

	// KeepCheckpoints is how many of an actor's newest checkpoints survive
	// an Append that writes a newer one; a negative value keeps all of them.
	// Defaults to 3.
	KeepCheckpoints int

	// Compact bounds the file's growth (see Checkpoints and compaction in package
	// journal). Defaults to false.
	Compact bool
}

func (o Options) withDefaults() (Options, error) {
	if o.Synchronous == "" {
		o.Synchronous = SyncFull
	}
	switch strings.ToUpper(string(o.Synchronous)) {
	case string(SyncFull), string(SyncNormal):
	default:
		return o, fmt.Errorf("journal/sqlite: Options.Synchronous %q: use SyncFull or SyncNormal", o.Synchronous)
	}
	if o.KeepCheckpoints == 0 {
		o.KeepCheckpoints = DefaultKeepCheckpoints
	}
	return o, nil
}

// Writer connection tuning. A batch of many actors dirties roughly one
// page per actor, so SQLite's defaults (a 2 MiB cache, a WAL checkpoint
// every 1000 pages) make nearly every commit spill its cache and run a
// checkpoint. A larger cache and a larger WAL roughly double the rows
// written per second; the price is up to ~64 MiB of WAL on disk and up to
// 32 MiB of cache per process.
const (
	writerCacheKiB        = 32 << 10
	writerAutoCheckpoints = 16 << 10 // pages
)

const schema = `
CREATE TABLE IF NOT EXISTS journal_entries (
	actor  TEXT    NOT NULL,
	seq    INTEGER NOT NULL,
	kind   INTEGER NOT NULL,
	msg_id TEXT    NOT NULL,
	data   BLOB,
	PRIMARY KEY (actor, seq)
) WITHOUT ROWID;
CREATE UNIQUE INDEX IF NOT EXISTS journal_entries_outcome
	ON journal_entries (actor, msg_id) WHERE kind IN (3, 4);
CREATE TABLE IF NOT EXISTS journal_checkpoints (
	actor TEXT    NOT NULL,
	seq   INTEGER NOT NULL,
	state BLOB,
	PRIMARY KEY (actor, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS journal_epochs (
	"partition" TEXT PRIMARY KEY,
	epoch       INTEGER NOT NULL,
	horizon     INTEGER
);`

const (
	sqlRead = `SELECT seq, kind, msg_id, data FROM journal_entries
		WHERE actor = ? AND seq >= ? ORDER BY seq LIMIT ?`
	sqlLastSeq = `SELECT seq FROM journal_entries WHERE actor = ? ORDER BY seq DESC LIMIT 1`
	// Without statistics SQLite prefers the primary key, which reads the
	// actor's whole history; the kind term matches the partial index's.
	sqlOutcome = `SELECT seq, kind, data FROM journal_entries INDEXED BY journal_entries_outcome
		WHERE actor = ? AND msg_id = ? AND kind IN (3, 4) ORDER BY seq LIMIT 1`
	sqlLoadCheckpoint = `SELECT seq, state FROM journal_checkpoints
		WHERE actor = ? AND seq <= ? ORDER BY seq DESC LIMIT 1`
	sqlEpoch   = `SELECT epoch FROM journal_epochs WHERE "partition" = ?`
	sqlHorizon = `SELECT horizon FROM journal_epochs WHERE "partition" = ?`
)

// Journal is a journal.Journal in a SQLite file. It is safe for concurrent
// use; Appends of one Journal are serialized in Go, and those of other
// processes on SQLite's write lock. Its reads (Read, LastSeq, Outcome,
// LoadCheckpoint, Horizon, Epoch) are one prepared statement each, run
// beside the writer; Data of a compacted outcome reads as nil.
type Journal struct {
	reads
	db      *sql.DB
	keep    int // <= 0 keeps every checkpoint
	compact bool
	closed  atomic.Bool

	stmts readStmts

	// mu serializes this process's writers: they queue here rather than on
	// SQLite's busy timeout, which polls.
	mu sync.Mutex
	w  *writer // nil until first needed, after Close, or after its connection broke
}

var _ journal.Journal = (*Journal)(nil)

// Open opens the journal in the SQLite file at path, creating the file and
// the journal's tables if they are missing.
func Open(path string, opts Options) (*Journal, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	db, err := sqlitedb.Open(path, sqlitedb.Options{Synchronous: opts.Synchronous})
	if err != nil {
		return nil, fmt.Errorf("journal/sqlite: %w", err)
	}
	// The writer's own connection plus four readers, all kept open: opening
	// a connection costs far more than waiting for one, and many actors
	// look up outcomes at once.
	db.SetMaxOpenConns(5)
	db.SetMaxIdleConns(5)
	db.SetConnMaxIdleTime(0)
	j := &Journal{db: db, keep: opts.KeepCheckpoints, compact: opts.Compact}
	j.reads = sqlreads.New("journal/sqlite", &j.stmts, sql.ErrNoRows, j.closed.Load)

	ctx := context.Background()
	j.mu.Lock()
	_, err = j.writer(ctx) // creates the tables
	j.mu.Unlock()
	if err == nil {
		err = j.prepareReads(ctx)
	}
	if err != nil {
		j.Close()
		return nil, fmt.Errorf("%w (file %s)", err, path)
	}
	return j, nil
}

func (j *Journal) prepareReads(ctx context.Context) error {
	err := prepare(ctx, j.db,
		stmt{&j.stmts[sqlreads.Read], sqlRead},
		stmt{&j.stmts[sqlreads.LastSeq], sqlLastSeq},
		stmt{&j.stmts[sqlreads.Outcome], sqlOutcome},
		stmt{&j.stmts[sqlreads.LoadCheckpoint], sqlLoadCheckpoint},
		stmt{&j.stmts[sqlreads.Horizon], sqlHorizon},
		stmt{&j.stmts[sqlreads.Epoch], sqlEpoch})
	if err != nil {
		return fmt.Errorf("journal/sqlite: %w", err)
	}
	return nil
}

// reads serves the journal's reads; embedded, its methods are the
// Journal's.
type reads = sqlreads.Reads

// readStmts are the prepared reads, run on the pool.
type readStmts [sqlreads.Queries]*sql.Stmt

func (r *readStmts) QueryRow(ctx context.Context, q sqlreads.Query, args []any, dest ...any) error {
	return r[q].QueryRowContext(ctx, args...).Scan(dest...)
}

func (r *readStmts) Query(ctx context.Context, q sqlreads.Query, args []any, scan func(pages.Rows) error) error {
	rows, err := r[q].QueryContext(ctx, args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	return scan(rows)
}

// stmt is a statement to prepare, and where to keep it.
type stmt struct {
	s   **sql.Stmt
	sql string
}

// prepare prepares each statement of stmts on db.
func prepare(ctx context.Context, db *sql.DB, stmts ...stmt) error {
	for _, p := range stmts {
		s, err := db.PrepareContext(ctx, p.sql)
		if err != nil {
			return fmt.Errorf("prepare %q: %w", p.sql, err)
		}
		*p.s = s
	}
	return nil
}

// closeStmts closes those of stmts that were prepared.
func closeStmts(stmts ...*sql.Stmt) error {
	var errs []error
	for _, s := range stmts {
		if s != nil {
			errs = append(errs, s.Close())
		}
	}
	return errors.Join(errs...)
}

// writer returns the write connection, opening it if needed. j.mu must be
// held.
func (j *Journal) writer(ctx context.Context) (*writer, error) {
	if j.closed.Load() {
		return nil, journal.ErrClosed
	}
	if j.w == nil {
		w, err := newWriter(ctx, j.db)
		if err != nil {
			return nil, j.Failed(fmt.Errorf("journal/sqlite: open write connection: %w", err))
		}
		j.w = w
	}
	return j.w, nil
}

// writeFailed drops the write connection when err says it is broken, so
// the next write opens a fresh one. j.mu must be held.
func (j *Journal) writeFailed(err error) error {
	if j.w != nil && (errors.Is(err, driver.ErrBadConn) || errors.Is(err, sql.ErrConnDone)) {
		j.w.close()
		j.w = nil
	}
	return j.Failed(err)
}

// Append implements journal.Journal, in one write transaction. The unique
// outcome index refuses a second outcome of a message, as
// journal.ErrDuplicateOutcome.
func (j *Journal) Append(ctx context.Context, batches ...journal.Batch) error {
	if write, err := journal.BeginAppend(ctx, j.closed.Load(), batches); !write {
		return err
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	w, err := j.writer(ctx)
	if err != nil {
		return err
	}
	defer func() { w.current = nil }() // the caller's batches
	fenced, err := w.append(ctx, batches, j.keep, j.compact)
	if err != nil && isUniqueViolation(err) {
		return j.duplicateOutcome(ctx, w.current, err)
	}
	if err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil {
			// database/sql rolled the transaction back; say why.
			return fmt.Errorf("journal/sqlite: append: nothing written: %w", ctxErr)
		}
		return j.writeFailed(fmt.Errorf("journal/sqlite: append: %w", err))
	}
	if len(fenced) > 0 {
		return &journal.FencedError{Partitions: fenced}
	}
	return nil
}

// sqliteUniqueViolation is SQLITE_CONSTRAINT_UNIQUE: in journal_entries
// only the outcome index raises it (the primary key raises
// SQLITE_CONSTRAINT_PRIMARYKEY, and the sequence check comes first).
const sqliteUniqueViolation = 2067

func isUniqueViolation(err error) bool {
	var coded interface{ Code() int }
	return errors.As(err, &coded) && coded.Code() == sqliteUniqueViolation
}

// duplicateOutcome names the outcome entry the unique index refused, found
// again once the transaction is rolled back: one repeated within the call,
// or one whose message has an outcome in the file.
func (j *Journal) duplicateOutcome(ctx context.Context, current []journal.Batch, cause error) error {
	err := journal.CheckOutcomes(current, func(actor, msgID string) (int64, bool) {
		o, ok, err := j.Outcome(ctx, actor, msgID)
		return o.Seq, ok && err == nil
	})
	if err != nil {
		return err
	}
	return fmt.Errorf("%w: nothing of this Append was written: %w", journal.ErrDuplicateOutcome, cause)
}

// CompareAndSetEpoch implements journal.Journal. It refuses to move an
// epoch backward, which would unfence a zombie.
func (j *Journal) CompareAndSetEpoch(ctx context.Context, partition string, old, next int64) (bool, error) {
	if err := journal.BeginEpochMove(j.closed.Load(), partition, old, next); err != nil {
		return false, err
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	w, err := j.writer(ctx)
	if err != nil {
		return false, err
	}
	ok, err := w.compareAndSetEpoch(ctx, partition, old, next)
	if err != nil {
		return false, j.writeFailed(fmt.Errorf("journal/sqlite: set epoch of %q: %w", partition, err))
	}
	return ok, nil
}

// Close closes the journal, waiting for an Append in progress. Later calls
// return journal.ErrClosed; closing again is a no-op.
func (j *Journal) Close() error {
	if !j.closed.CompareAndSwap(false, true) {
		return nil
	}
	j.mu.Lock()
	var errs []error
	if j.w != nil {
		errs = append(errs, j.w.close())
		j.w = nil
	}
	j.mu.Unlock()
	errs = append(errs, closeStmts(j.stmts[:]...))
	errs = append(errs, j.db.Close())
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("journal/sqlite: close: %w", err)
	}
	return nil
}
