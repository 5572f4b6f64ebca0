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
// processes on SQLite's write lock.
type Journal struct {
	db      *sql.DB
	keep    int // <= 0 keeps every checkpoint
	compact bool
	closed  atomic.Bool

	read, lastSeq, outcome, loadCheckpoint, epoch, horizon *sql.Stmt

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
	for _, p := range []struct {
		s   **sql.Stmt
		sql string
	}{
		{&j.read, sqlRead},
		{&j.lastSeq, sqlLastSeq},
		{&j.outcome, sqlOutcome},
		{&j.loadCheckpoint, sqlLoadCheckpoint},
		{&j.epoch, sqlEpoch},
		{&j.horizon, sqlHorizon},
	} {
		s, err := j.db.PrepareContext(ctx, p.sql)
		if err != nil {
			return fmt.Errorf("journal/sqlite: prepare %q: %w", p.sql, err)
		}
		*p.s = s
	}
	return nil
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
			return nil, j.failed(fmt.Errorf("journal/sqlite: open write connection: %w", err))
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
	return j.failed(err)
}

// failed turns an error of a call that raced with Close into ErrClosed.
func (j *Journal) failed(err error) error {
	if j.closed.Load() {
		return journal.ErrClosed
	}
	return err
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

// Read implements journal.Journal. Data of a compacted outcome is nil.
func (j *Journal) Read(ctx context.Context, actor string, from int64, fn func(journal.Entry) error) error {
	_, err := pages.Read(ctx, from, j.closed.Load, func(ctx context.Context, from int64, page []journal.Entry) ([]journal.Entry, error) {
		rows, err := j.read.QueryContext(ctx, actor, from, pages.Size)
		if err == nil {
			page, err = pages.Scan(rows, actor, page)
			rows.Close()
		}
		if err != nil {
			return page, j.failed(fmt.Errorf("journal/sqlite: read %s from %d: %w", actor, from, err))
		}
		return page, nil
	}, fn)
	return err
}

// row runs a lookup of at most one row into dest; found is false when it
// matched none. what names the lookup in an error.
func (j *Journal) row(ctx context.Context, what string, stmt *sql.Stmt, args []any, dest ...any) (found bool, err error) {
	if j.closed.Load() {
		return false, journal.ErrClosed
	}
	err = stmt.QueryRowContext(ctx, args...).Scan(dest...)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, j.failed(fmt.Errorf("journal/sqlite: %s: %w", what, err))
	}
	return true, nil
}

// LastSeq implements journal.Journal.
func (j *Journal) LastSeq(ctx context.Context, actor string) (int64, error) {
	var seq int64
	_, err := j.row(ctx, "last seq of "+actor, j.lastSeq, []any{actor}, &seq)
	return seq, err
}

// Outcome implements journal.Journal. Data of a compacted outcome is nil.
func (j *Journal) Outcome(ctx context.Context, actor, msgID string) (journal.Entry, bool, error) {
	e := journal.Entry{Actor: actor, MsgID: msgID}
	var kind int64
	ok, err := j.row(ctx, fmt.Sprintf("outcome of %s message %q", actor, msgID), j.outcome, []any{actor, msgID}, &e.Seq, &kind, &e.Data)
	if !ok {
		return journal.Entry{}, false, err
	}
	e.Kind = journal.Kind(kind)
	return e, true, nil
}

// LoadCheckpoint implements journal.Journal.
func (j *Journal) LoadCheckpoint(ctx context.Context, actor string, atOrBefore int64) (journal.Checkpoint, bool, error) {
	cp := journal.Checkpoint{Actor: actor}
	ok, err := j.row(ctx, "checkpoint of "+actor, j.loadCheckpoint, []any{actor, atOrBefore}, &cp.Seq, &cp.State)
	if !ok {
		return journal.Checkpoint{}, false, err
	}
	return cp, true, nil
}

// Horizon implements journal.Journal.
func (j *Journal) Horizon(ctx context.Context, partition string) (int64, bool, error) {
	var h sql.NullInt64
	_, err := j.row(ctx, fmt.Sprintf("horizon of %q", partition), j.horizon, []any{partition}, &h)
	return h.Int64, h.Valid && err == nil, err
}

// Epoch implements journal.Journal.
func (j *Journal) Epoch(ctx context.Context, partition string) (int64, error) {
	var e int64
	_, err := j.row(ctx, fmt.Sprintf("epoch of %q", partition), j.epoch, []any{partition}, &e)
	return e, err
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
	for _, s := range []*sql.Stmt{j.read, j.lastSeq, j.outcome, j.loadCheckpoint, j.epoch, j.horizon} {
		if s != nil {
			errs = append(errs, s.Close())
		}
	}
	errs = append(errs, j.db.Close())
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("journal/sqlite: close: %w", err)
	}
	return nil
}
