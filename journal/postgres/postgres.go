// Package postgres is a journal.Journal in PostgreSQL, on pgx.
//
// Every Append is one transaction, whatever the number of batches and
// actors in it, and usually costs two round trips: one that begins it and
// locks the epoch rows of its partitions (FOR SHARE), and one that writes
// all entries and all checkpoints (one multi-row INSERT each, from arrays),
// prunes old checkpoints and commits.
//
// Many processes on many hosts may share one journal. What makes that safe
// is in the database, not in the process:
//   - Fencing: an Append holds a share lock on the epoch row of every
//     partition it writes until it commits, and CompareAndSetEpoch updates
//     that row. So a new owner's epoch change waits for the old owner's
//     Appends in flight, and no Append stamped with the old epoch commits
//     after the change. The partition's horizon lives in that row too: an
//     Append that sets one locks its rows for update instead, and so waits
//     for the Appends in flight on those partitions, and they for it.
//   - Sequences: the primary key (actor, seq) refuses a second writer of
//     one sequence number; the loser gets journal.ErrSequence. Each Journal
//     remembers the last sequence it saw committed for recently used actors
//     and checks an Append against that first, reading the database only
//     for actors it does not know, or when the check fails. Its memory can
//     only lag behind the database, never run ahead of it (no write ever
//     deletes an actor's last entry), and continuing from a lagging value
//     collides with the primary key. So delete no journal rows behind its
//     back while journals are open.
//   - Schema: Open creates and migrates the tables (embedded migrations,
//     recorded in <prefix>schema_migrations) in one transaction under an
//     advisory lock, so processes starting together do not race.
//
// What it does not give: an Append whose connection breaks while it
// commits may have been written or not (the error says so); appending the
// same entries again is safe, and returns journal.ErrSequence if the first
// attempt was written. Durability is the server's: with PostgreSQL's
// defaults (fsync on, synchronous_commit on) a returned Append survives a
// crash of the server or its host; synchronous_commit off trades the last
// few hundred milliseconds of Appends for speed.
package postgres

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"sync/atomic"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/postbox-dev/postbox/journal"
	"github.com/postbox-dev/postbox/journal/internal/pages"
	"github.com/postbox-dev/postbox/journal/internal/sqlreads"
)

// DefaultKeepCheckpoints is what Options.KeepCheckpoints 0 means.
const DefaultKeepCheckpoints = journal.DefaultKeepCheckpoints

// DefaultTablePrefix is what Options.TablePrefix "" means.
const DefaultTablePrefix = "journal_"

// Options tune Open and New. The zero value is ready to use.
type Options struct {
	// Schema is the PostgreSQL schema that holds the journal's tables; Open
	// creates it if it is missing. Defaults to the connection's current
	// schema (the first existing schema of its search_path, usually
	// public).
	Schema string

	// TablePrefix starts the name of each of the journal's tables
	// (<prefix>entries, <prefix>checkpoints, <prefix>epochs,
	// <prefix>schema_migrations), so that several journals can share a
	// schema. Lower-case letters, digits and underscores, at most 40.
	// Defaults to "journal_".
	TablePrefix string

	// KeepCheckpoints is how many of an actor's newest checkpoints survive
	// an Append that writes a newer one; a negative value keeps all of them.
	// Defaults to 3.
	KeepCheckpoints int

	// Compact bounds the tables' growth (see Checkpoints and compaction in package
	// journal). Defaults to false.
	Compact bool
}

var prefixPattern = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,39}$`)

func (o Options) withDefaults() (Options, error) {
	if o.TablePrefix == "" {
		o.TablePrefix = DefaultTablePrefix
	}
	if !prefixPattern.MatchString(o.TablePrefix) {
		return o, fmt.Errorf("journal/postgres: Options.TablePrefix %q: use at most 40 lower-case letters, digits and underscores, not starting with a digit", o.TablePrefix)
	}
	if len(o.Schema) > 63 {
		return o, fmt.Errorf("journal/postgres: Options.Schema %q: PostgreSQL names are at most 63 bytes", o.Schema)
	}
	if o.KeepCheckpoints == 0 {
		o.KeepCheckpoints = DefaultKeepCheckpoints
	}
	return o, nil
}

// Journal is a journal.Journal in PostgreSQL. It is safe for concurrent
// use, and any number of Journals, in any processes, may share one set of
// tables. Its reads (Read, LastSeq, Outcome, LoadCheckpoint, Horizon,
// Epoch) are one query each, on a pooled connection; Data of a compacted
// outcome reads as nil.
type Journal struct {
	reads
	pool    *pgxpool.Pool
	ownPool bool // opened by Open, so closed by Close
	t       tables
	keep    int // <= 0 keeps every checkpoint
	compact bool
	closed  atomic.Bool
	sql     statements
	heads   *headCache
}

var _ journal.Journal = (*Journal)(nil)

// Open connects to the database at dsn (a postgres:// URL or a key=value
// string, as pgxpool.ParseConfig takes it: pool_max_conns and the other
// pool_ settings apply), creates or migrates the journal's tables, and
// returns the journal. ctx bounds the connecting and the migration.
func Open(ctx context.Context, dsn string, opts Options) (*Journal, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("journal/postgres: parse the DSN: %w", err)
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("journal/postgres: %w", err)
	}
	j, err := New(ctx, pool, opts)
	if err != nil {
		pool.Close()
		return nil, err
	}
	j.ownPool = true
	return j, nil
}

// New returns a journal on a pool the caller made and keeps: its tables
// are created or migrated as by Open, and Close leaves the pool open. ctx
// bounds the migration.
func New(ctx context.Context, pool *pgxpool.Pool, opts Options) (*Journal, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	return open(ctx, pool, opts)
}

func open(ctx context.Context, pool *pgxpool.Pool, opts Options) (*Journal, error) {
	if err := pool.Ping(ctx); err != nil {
		return nil, fmt.Errorf("journal/postgres: connect to %s: %w (is the server up? scripts/services.sh start postgres runs one for tests)",
			pool.Config().ConnConfig.Host, err)
	}
	schema := opts.Schema
	if schema == "" {
		var cur *string
		if err := pool.QueryRow(ctx, `SELECT current_schema()`).Scan(&cur); err != nil {
			return nil, fmt.Errorf("journal/postgres: find the current schema: %w", err)
		}
		if cur == nil {
			return nil, errors.New("journal/postgres: no schema of the search_path exists: set Options.Schema")
		}
		schema = *cur
	}
	t := newTables(schema, opts.TablePrefix)
	if err := migrate(ctx, pool, t); err != nil {
		return nil, fmt.Errorf("journal/postgres: migrate schema %s: %w", t.schema, err)
	}
	j := &Journal{
		pool:    pool,
		t:       t,
		keep:    opts.KeepCheckpoints,
		compact: opts.Compact,
		sql:     newStatements(t),
		heads:   newHeadCache(),
	}
	j.reads = sqlreads.New("journal/postgres", (*readDB)(j), pgx.ErrNoRows, j.closed.Load)
	return j, nil
}

// reads serves the journal's reads; embedded, its methods are the
// Journal's, but for those that also feed the head cache.
type reads = sqlreads.Reads

// readDB runs the journal's reads on its pool.
type readDB Journal

func (r *readDB) QueryRow(ctx context.Context, q sqlreads.Query, args []any, dest ...any) error {
	return r.pool.QueryRow(ctx, r.sql.reads[q], args...).Scan(dest...)
}

func (r *readDB) Query(ctx context.Context, q sqlreads.Query, args []any, scan func(pages.Rows) error) error {
	rows, err := r.pool.Query(ctx, r.sql.reads[q], args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	return scan(rows)
}

// Read implements journal.Journal, and tells the head cache the last seq
// it read.
func (j *Journal) Read(ctx context.Context, actor string, from int64, fn func(journal.Entry) error) error {
	last, err := j.reads.ReadLast(ctx, actor, from, fn)
	if err == nil && last > 0 {
		j.heads.saw(actor, last)
	}
	return err
}

// LastSeq implements journal.Journal, and tells the head cache.
func (j *Journal) LastSeq(ctx context.Context, actor string) (int64, error) {
	seq, err := j.reads.LastSeq(ctx, actor)
	if err != nil {
		return 0, err
	}
	j.heads.saw(actor, seq)
	return seq, nil
}

// CompareAndSetEpoch implements journal.Journal, in one round trip. It
// waits for Appends in flight that wrote under the partition's current
// epoch, and refuses to move an epoch backward, which would unfence a
// zombie.
func (j *Journal) CompareAndSetEpoch(ctx context.Context, partition string, old, next int64) (bool, error) {
	if err := journal.BeginEpochMove(j.closed.Load(), partition, old, next); err != nil {
		return false, err
	}
	b := &pgx.Batch{}
	if old == 0 {
		b.Queue(j.sql.addEpoch, partition)
	}
	cas := b.Queue(j.sql.casEpoch, partition, old, next)
	var set bool
	cas.Exec(func(tag pgconn.CommandTag) error {
		set = tag.RowsAffected() == 1
		return nil
	})
	// One round trip, one implicit transaction.
	if err := j.pool.SendBatch(ctx, b).Close(); err != nil {
		return false, j.Failed(fmt.Errorf("journal/postgres: set epoch of %q: %w", partition, err))
	}
	return set, nil
}

// Close closes the journal: the pool too if Open made it, not one given to
// New. It waits for calls in progress.
// Later calls return journal.ErrClosed; closing again is a no-op.
func (j *Journal) Close() error {
	if !j.closed.CompareAndSwap(false, true) {
		return nil
	}
	if j.ownPool {
		j.pool.Close()
	}
	return nil
}
