package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/postbox-dev/postbox/journal"
)

// Statement shapes of the hot path: one driver round trip (argument
// conversion, binding, a statement step) per 32 rows or actors instead of
// per row, which also halves the allocations per entry.
const (
	insertRows = 32 // entries per multi-row INSERT
	headActors = 32 // actors per head lookup
)

var (
	sqlInsertOne  = `INSERT INTO journal_entries (actor, seq, kind, msg_id, data) VALUES (?, ?, ?, ?, ?)`
	sqlInsertMany = `INSERT INTO journal_entries (actor, seq, kind, msg_id, data) VALUES ` +
		strings.TrimSuffix(strings.Repeat("(?, ?, ?, ?, ?), ", insertRows), ", ")
	// One row whose columns are the last seq of each actor, NULL for none;
	// each subquery is one descent of the primary key.
	sqlHeads = `SELECT ` + strings.TrimSuffix(strings.Repeat(
		`(SELECT seq FROM journal_entries WHERE actor = ? ORDER BY seq DESC LIMIT 1), `, headActors), ", ")
	sqlSaveCheckpoint = `INSERT INTO journal_checkpoints (actor, seq, state) VALUES (?, ?, ?)
		ON CONFLICT (actor, seq) DO UPDATE SET state = excluded.state`
	// Deletes all but the newest ?2 checkpoints of actor ?1; when there are
	// fewer, the subquery is NULL and nothing matches.
	sqlPruneCheckpoints = `DELETE FROM journal_checkpoints WHERE actor = ?1 AND seq <
		(SELECT seq FROM journal_checkpoints WHERE actor = ?1 ORDER BY seq DESC LIMIT 1 OFFSET ?2 - 1)`
	sqlOldestCheckpoint = `SELECT seq FROM journal_checkpoints WHERE actor = ? ORDER BY seq LIMIT 1`
	sqlCompactDelete    = `DELETE FROM journal_entries
		WHERE actor = ? AND seq > ? AND seq <= ? AND kind IN (1, 2)`
	sqlCompactClear = `UPDATE journal_entries SET data = NULL
		WHERE actor = ? AND seq > ? AND seq <= ? AND kind IN (3, 4) AND data IS NOT NULL`
	sqlSetEpoch = `INSERT INTO journal_epochs ("partition", epoch) VALUES (?, ?)
		ON CONFLICT ("partition") DO UPDATE SET epoch = excluded.epoch`
	// A partition with no row yet gets one with epoch 0, which reads as
	// none, as no row does.
	sqlSetHorizon = `INSERT INTO journal_epochs ("partition", epoch, horizon) VALUES (?, 0, ?)
		ON CONFLICT ("partition") DO UPDATE SET horizon = excluded.horizon`
)

// writer is the one connection this process writes through, with its
// statements and scratch space. Only the holder of Journal.mu uses it.
type writer struct {
	conn *sql.Conn

	// Prepared on the pool; a transaction binds them to conn, where
	// database/sql keeps them prepared between transactions.
	insertOne, insertMany, heads, epoch, saveCheckpoint, pruneCheckpoints,
	oldestCheckpoint, compactDelete, compactClear, setEpoch, setHorizon *sql.Stmt

	// Scratch reused by every append.
	epochs  []partitionEpoch
	current []journal.Batch // of the append in progress
	next    map[string]int  // actor -> its index in lookup and seqs
	lookup  []string        // the actors of the current batches
	seqs    []int64         // each actor's next seq
	cpActor []string
	args    []any
	dest    []any
	headSeq []sql.NullInt64
}

type partitionEpoch struct {
	partition string
	epoch     int64
}

func newWriter(ctx context.Context, db *sql.DB) (_ *writer, err error) {
	conn, err := db.Conn(ctx)
	if err != nil {
		return nil, err
	}
	w := &writer{conn: conn, next: make(map[string]int)}
	defer func() {
		if err != nil {
			w.close() // w itself, not the nil the error return set
		}
	}()
	for _, pragma := range []string{
		fmt.Sprintf("PRAGMA cache_size = -%d", writerCacheKiB),
		fmt.Sprintf("PRAGMA wal_autocheckpoint = %d", writerAutoCheckpoints),
	} {
		if _, err := conn.ExecContext(ctx, pragma); err != nil {
			return nil, fmt.Errorf("%s: %w", pragma, err)
		}
	}
	if err := createSchema(ctx, conn); err != nil {
		return nil, err
	}
	if err := prepare(ctx, db,
		stmt{&w.insertOne, sqlInsertOne},
		stmt{&w.insertMany, sqlInsertMany},
		stmt{&w.heads, sqlHeads},
		stmt{&w.epoch, sqlEpoch},
		stmt{&w.saveCheckpoint, sqlSaveCheckpoint},
		stmt{&w.pruneCheckpoints, sqlPruneCheckpoints},
		stmt{&w.oldestCheckpoint, sqlOldestCheckpoint},
		stmt{&w.compactDelete, sqlCompactDelete},
		stmt{&w.compactClear, sqlCompactClear},
		stmt{&w.setEpoch, sqlSetEpoch},
		stmt{&w.setHorizon, sqlSetHorizon}); err != nil {
		return nil, err
	}
	return w, nil
}

// createSchema creates the journal's tables if they are missing. Every
// statement is idempotent, so processes opening one file at once agree.
func createSchema(ctx context.Context, conn *sql.Conn) error {
	tx, err := conn.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("create tables: %w", err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, schema); err != nil {
		return fmt.Errorf("create tables: %w", err)
	}
	if err := uniqueOutcomes(ctx, tx); err != nil {
		return err
	}
	if err := addHorizons(ctx, tx); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("create tables: %w", err)
	}
	return nil
}

// uniqueOutcomes makes the outcome index of a file created before outcomes
// were unique a unique one, under the same name: processes of the older
// version on the file keep finding it.
func uniqueOutcomes(ctx context.Context, tx *sql.Tx) error {
	var unique bool
	err := tx.QueryRowContext(ctx, `SELECT "unique" FROM pragma_index_list('journal_entries')
		WHERE name = 'journal_entries_outcome'`).Scan(&unique)
	if err != nil {
		return fmt.Errorf("look up the outcome index: %w", err)
	}
	if unique {
		return nil
	}
	_, err = tx.ExecContext(ctx, `DROP INDEX journal_entries_outcome;
		CREATE UNIQUE INDEX journal_entries_outcome ON journal_entries (actor, msg_id) WHERE kind IN (3, 4);`)
	if isUniqueViolation(err) {
		return errors.New("make the outcome index unique: the file holds messages with more than one outcome " +
			"(list them with SELECT actor, msg_id FROM journal_entries WHERE kind IN (3, 4) GROUP BY 1, 2 HAVING count(*) > 1); " +
			"open it with the previous version, or repair a copy by hand, keeping each message's first outcome")
	}
	if err != nil {
		return fmt.Errorf("make the outcome index unique: %w", err)
	}
	return nil
}

// addHorizons adds the horizon column to the epochs table of a file created
// before partitions had horizons; NULL, as in a row that never got one,
// means none. Processes of the older version on the file name the columns
// they use, so they keep working beside it.
func addHorizons(ctx context.Context, tx *sql.Tx) error {
	var has bool
	err := tx.QueryRowContext(ctx, `SELECT count(*) > 0 FROM pragma_table_info('journal_epochs')
		WHERE name = 'horizon'`).Scan(&has)
	if err != nil {
		return fmt.Errorf("look up the horizon column: %w", err)
	}
	if has {
		return nil
	}
	if _, err := tx.ExecContext(ctx, `ALTER TABLE journal_epochs ADD COLUMN horizon INTEGER`); err != nil {
		return fmt.Errorf("add the horizon column: %w", err)
	}
	return nil
}

func (w *writer) close() error {
	return errors.Join(closeStmts(w.insertOne, w.insertMany, w.heads, w.epoch, w.saveCheckpoint,
		w.pruneCheckpoints, w.oldestCheckpoint, w.compactDelete, w.compactClear, w.setEpoch, w.setHorizon),
		w.conn.Close())
}

// append writes the current batches in one transaction and returns the
// partitions of the stale ones.
func (w *writer) append(ctx context.Context, batches []journal.Batch, keep int, compact bool) ([]string, error) {
	tx, err := w.conn.BeginTx(ctx, nil)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback() // a no-op after Commit
	// Let go of the caller's strings and buffers.
	defer func() { clear(w.args[:cap(w.args)]) }()

	// Statements run without ctx: a cancellable one costs the driver a
	// goroutine per statement, and database/sql already rolls the
	// transaction back if ctx ends.
	sctx := context.WithoutCancel(ctx)

	fenced, err := w.fence(ctx, sctx, tx, batches)
	if err != nil {
		return nil, err
	}
	if err := w.checkSequences(ctx, sctx, tx); err != nil {
		return nil, err
	}
	if err := w.insertEntries(ctx, sctx, tx); err != nil {
		return nil, err
	}
	if err := w.saveCheckpoints(ctx, sctx, tx, keep, compact); err != nil {
		return nil, err
	}
	if err := w.saveHorizons(ctx, sctx, tx); err != nil {
		return nil, err
	}
	if err := tx.Commit(); err != nil {
		return nil, err
	}
	return fenced, nil
}

// fence sets w.current to the batches that carry their partition's
// current epoch, and returns the partitions of the others, each once.
func (w *writer) fence(ctx, sctx context.Context, tx *sql.Tx, batches []journal.Batch) ([]string, error) {
	w.epochs = w.epochs[:0]
	var stmt *sql.Stmt
	current, fenced, err := journal.Fence(batches, func(p string) (int64, error) {
		if k := slices.IndexFunc(w.epochs, func(pe partitionEpoch) bool { return pe.partition == p }); k >= 0 {
			return w.epochs[k].epoch, nil
		}
		if stmt == nil {
			stmt = tx.StmtContext(ctx, w.epoch)
		}
		var e int64
		err := stmt.QueryRowContext(sctx, p).Scan(&e)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return 0, fmt.Errorf("epoch of %q: %w", p, err)
		}
		w.epochs = append(w.epochs, partitionEpoch{p, e})
		return e, nil
	})
	w.current = current
	return fenced, err
}

// checkSequences checks that every actor's entries in the current batches
// continue its history without a gap or a repeat, and that checkpoints
// follow entries that exist. It fills w.next, w.lookup and w.seqs.
func (w *writer) checkSequences(ctx, sctx context.Context, tx *sql.Tx) error {
	clear(w.next)
	w.lookup = w.lookup[:0]
	see := func(actor string) {
		if _, ok := w.next[actor]; !ok {
			w.next[actor] = len(w.lookup)
			w.lookup = append(w.lookup, actor)
		}
	}
	for _, b := range w.current {
		for _, e := range b.Entries {
			see(e.Actor)
		}
		for _, cp := range b.Checkpoints {
			see(cp.Actor)
		}
	}
	if err := w.lookUpHeads(ctx, sctx, tx); err != nil {
		return err
	}
	return journal.CheckSequences(w.current, func(actor string) *int64 { return &w.seqs[w.next[actor]] })
}

// nextSeq is actor's next seq, as checkSequences found it and the current
// batches moved it.
func (w *writer) nextSeq(actor string) int64 { return w.seqs[w.next[actor]] }

// lookUpHeads sets w.seqs of every actor in w.lookup to its last seq + 1,
// headActors actors per query.
func (w *writer) lookUpHeads(ctx, sctx context.Context, tx *sql.Tx) error {
	w.seqs = slices.Grow(w.seqs[:0], len(w.lookup))[:len(w.lookup)]
	if len(w.lookup) == 0 {
		return nil
	}
	if len(w.dest) == 0 {
		w.headSeq = make([]sql.NullInt64, headActors)
		w.dest = make([]any, headActors)
		for i := range w.dest {
			w.dest[i] = &w.headSeq[i]
		}
	}
	stmt := tx.StmtContext(ctx, w.heads)
	for start := 0; start < len(w.lookup); start += headActors {
		chunk := w.lookup[start:min(start+headActors, len(w.lookup))]
		w.args = w.args[:0]
		for i := range headActors {
			// A short chunk repeats its last actor: one statement for all sizes.
			w.args = append(w.args, chunk[min(i, len(chunk)-1)])
		}
		if err := stmt.QueryRowContext(sctx, w.args...).Scan(w.dest...); err != nil {
			return fmt.Errorf("look up last seqs: %w", err)
		}
		for i := range chunk {
			w.seqs[start+i] = w.headSeq[i].Int64 + 1 // NULL reads as 0
		}
	}
	return nil
}

func (w *writer) insertEntries(ctx, sctx context.Context, tx *sql.Tx) error {
	var many, one *sql.Stmt
	w.args = w.args[:0]
	flush := func() error {
		if len(w.args) == 0 {
			return nil
		}
		if many == nil {
			many = tx.StmtContext(ctx, w.insertMany)
		}
		_, err := many.ExecContext(sctx, w.args...)
		w.args = w.args[:0]
		return err
	}
	for _, b := range w.current {
		for _, e := range b.Entries {
			w.args = append(w.args, e.Actor, e.Seq, int64(e.Kind), e.MsgID, e.Data)
			if len(w.args) == 5*insertRows {
				if err := flush(); err != nil {
					return fmt.Errorf("insert entries: %w", err)
				}
			}
		}
	}
	// The rest, fewer than insertRows, one by one.
	for k := 0; k < len(w.args); k += 5 {
		if one == nil {
			one = tx.StmtContext(ctx, w.insertOne)
		}
		if _, err := one.ExecContext(sctx, w.args[k:k+5]...); err != nil {
			return fmt.Errorf("insert entries: %w", err)
		}
	}
	return nil
}

// saveCheckpoints writes the checkpoints of the current batches, then
// prunes and compacts each actor that got one.
func (w *writer) saveCheckpoints(ctx, sctx context.Context, tx *sql.Tx, keep int, compact bool) error {
	w.cpActor = w.cpActor[:0]
	for _, b := range w.current {
		for _, cp := range b.Checkpoints {
			if !slices.Contains(w.cpActor, cp.Actor) {
				w.cpActor = append(w.cpActor, cp.Actor)
			}
		}
	}
	if len(w.cpActor) == 0 {
		return nil
	}

	var oldest *sql.Stmt
	oldestOf := func(actor string) (int64, error) {
		if oldest == nil {
			oldest = tx.StmtContext(ctx, w.oldestCheckpoint)
		}
		var seq int64
		err := oldest.QueryRowContext(sctx, actor).Scan(&seq)
		if errors.Is(err, sql.ErrNoRows) {
			return 0, nil
		}
		return seq, err
	}
	// Where the last compaction of each actor stopped.
	var before []int64
	if compact {
		for _, actor := range w.cpActor {
			seq, err := oldestOf(actor)
			if err != nil {
				return fmt.Errorf("find oldest checkpoint of %s: %w", actor, err)
			}
			before = append(before, seq)
		}
	}

	save := tx.StmtContext(ctx, w.saveCheckpoint)
	for _, b := range w.current {
		for _, cp := range b.Checkpoints {
			if _, err := save.ExecContext(sctx, cp.Actor, cp.Seq, cp.State); err != nil {
				return fmt.Errorf("save checkpoint of %s at %d: %w", cp.Actor, cp.Seq, err)
			}
		}
	}

	if keep > 0 {
		prune := tx.StmtContext(ctx, w.pruneCheckpoints)
		for _, actor := range w.cpActor {
			if _, err := prune.ExecContext(sctx, actor, keep); err != nil {
				return fmt.Errorf("prune checkpoints of %s: %w", actor, err)
			}
		}
	}

	if !compact {
		return nil
	}
	var del, clr *sql.Stmt
	for i, actor := range w.cpActor {
		upTo, err := oldestOf(actor)
		if err != nil {
			return fmt.Errorf("find oldest checkpoint of %s: %w", actor, err)
		}
		if upTo <= before[i] {
			continue
		}
		if del == nil {
			del = tx.StmtContext(ctx, w.compactDelete)
			clr = tx.StmtContext(ctx, w.compactClear)
		}
		// The last entry stays, whatever its kind: it is what the next
		// append's sequence check reads.
		last := w.nextSeq(actor) - 1
		if _, err := del.ExecContext(sctx, actor, before[i], min(upTo, last-1)); err != nil {
			return fmt.Errorf("compact %s: %w", actor, err)
		}
		if _, err := clr.ExecContext(sctx, actor, before[i], upTo); err != nil {
			return fmt.Errorf("compact %s: %w", actor, err)
		}
	}
	return nil
}

// saveHorizons writes the horizons of the current batches, in call order,
// so that a partition's last one counts. Batches without one cost nothing.
func (w *writer) saveHorizons(ctx, sctx context.Context, tx *sql.Tx) error {
	var stmt *sql.Stmt
	for _, b := range w.current {
		if b.Horizon <= 0 {
			continue
		}
		if stmt == nil {
			stmt = tx.StmtContext(ctx, w.setHorizon)
		}
		if _, err := stmt.ExecContext(sctx, b.Partition, b.Horizon); err != nil {
			return fmt.Errorf("set horizon of %q: %w", b.Partition, err)
		}
	}
	return nil
}

// compareAndSetEpoch moves partition's epoch from old to next in one write
// transaction.
func (w *writer) compareAndSetEpoch(ctx context.Context, partition string, old, next int64) (bool, error) {
	tx, err := w.conn.BeginTx(ctx, nil)
	if err != nil {
		return false, err
	}
	defer tx.Rollback()
	var cur int64
	err = tx.StmtContext(ctx, w.epoch).QueryRowContext(ctx, partition).Scan(&cur)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return false, err
	}
	if cur != old {
		return false, nil
	}
	if _, err := tx.StmtContext(ctx, w.setEpoch).ExecContext(ctx, partition, next); err != nil {
		return false, err
	}
	return true, tx.Commit()
}
