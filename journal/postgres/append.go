package postgres

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/postbox-dev/postbox/journal"
)

// maxAttempts bounds how often Append runs its transaction again when
// PostgreSQL aborted it to break a deadlock or a serialization conflict, or
// a pooled connection turned out dead before anything was sent.
const maxAttempts = 3

// Append implements journal.Journal, in one transaction. The unique outcome
// index refuses a second outcome of a message, as
// journal.ErrDuplicateOutcome.
func (j *Journal) Append(ctx context.Context, batches ...journal.Batch) error {
	if write, err := journal.BeginAppend(ctx, j.closed.Load(), batches); !write {
		return err
	}
	call := newAppendCall(batches)
	recheck := true
	for attempt := 1; ; attempt++ {
		fenced, err := j.append(ctx, call)
		if err == nil {
			if len(fenced) > 0 {
				return &journal.FencedError{Partitions: fenced}
			}
			return nil
		}
		if attempt < maxAttempts && retryable(err) && ctx.Err() == nil && !j.closed.Load() {
			continue
		}
		if recheck && errors.Is(err, journal.ErrDuplicateOutcome) && ctx.Err() == nil && !j.closed.Load() {
			// Checked against cached heads, the call may break a sequence
			// too, which the caller must learn first: run it once more
			// against the database's.
			recheck = false
			j.heads.forget(call.actors)
			continue
		}
		j.heads.forget(call.actors)
		return j.Failed(err)
	}
}

// retryable reports whether err ended a transaction that wrote nothing and
// may simply run again.
func retryable(err error) bool {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code == "40P01" || pgErr.Code == "40001" // deadlock_detected, serialization_failure
	}
	return pgconn.SafeToRetry(err)
}

// appendCall is what Append works out once from its batches, for every
// attempt.
type appendCall struct {
	batches    []journal.Batch
	partitions []string       // distinct, sorted: the order locks are taken in
	actors     []string       // distinct, in order of first appearance
	actorIdx   map[string]int // index into actors
	cpActors   []string       // distinct actors with a checkpoint
	horizons   bool           // some batch sets a horizon
}

func newAppendCall(batches []journal.Batch) *appendCall {
	c := &appendCall{batches: batches, actorIdx: make(map[string]int)}
	hasCP := make(map[string]bool)
	addActor := func(a string) {
		if _, ok := c.actorIdx[a]; !ok {
			c.actorIdx[a] = len(c.actors)
			c.actors = append(c.actors, a)
		}
	}
	for _, b := range batches {
		if !slices.Contains(c.partitions, b.Partition) {
			c.partitions = append(c.partitions, b.Partition)
		}
		c.horizons = c.horizons || b.Horizon > 0
		for _, e := range b.Entries {
			addActor(e.Actor)
		}
		for _, cp := range b.Checkpoints {
			addActor(cp.Actor)
			if !hasCP[cp.Actor] {
				hasCP[cp.Actor] = true
				c.cpActors = append(c.cpActors, cp.Actor)
			}
		}
	}
	slices.Sort(c.partitions)
	return c
}

// append runs one attempt of call's transaction and returns the partitions
// of its stale batches.
func (j *Journal) append(ctx context.Context, call *appendCall) (fenced []string, err error) {
	conn, err := j.pool.Acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("journal/postgres: append: %w", err)
	}
	defer conn.Release() // a connection left in a transaction is discarded
	c := conn.Conn()
	defer func() {
		if err != nil && !c.IsClosed() && c.PgConn().TxStatus() != 'I' {
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			_, _ = c.Exec(rctx, "ROLLBACK")
			cancel()
		}
	}()

	// Round trip 1: begin, lock the partitions' epochs, read the last
	// sequences the head cache does not know.
	epochs := make(map[string]int64, len(call.partitions))
	base := make([]int64, len(call.actors)) // each actor's next seq before this call
	unknown := j.heads.lookUp(call.actors, base)
	var since map[string]int64 // oldest checkpoint of actors with one in the call, when compacting
	lockSQL := j.sql.lockEpochs
	if call.horizons {
		lockSQL = j.sql.lockEpochsUpdate
	}
	b := &pgx.Batch{}
	b.Queue("BEGIN")
	lockEpochs(b, lockSQL, call.partitions, epochs)
	if len(unknown) > 0 {
		names := make([]string, len(unknown))
		for i, k := range unknown {
			names[i] = call.actors[k]
		}
		queueSeqs(b, j.sql.heads, names, func(i int, seq int64) { base[unknown[i]] = seq + 1 })
	}
	if j.compact && len(call.cpActors) > 0 {
		since = make(map[string]int64, len(call.cpActors))
		queueSeqs(b, j.sql.oldestCheckpoints, call.cpActors, func(i int, seq int64) { since[call.cpActors[i]] = seq })
	}
	if err := c.SendBatch(ctx, b).Close(); err != nil {
		return nil, j.writeError("lock partition epochs and read last sequences", ctx, err, false)
	}
	if len(epochs) < len(call.partitions) {
		// Partitions never acquired have no row to lock: add one with
		// epoch 0, then lock it. A CompareAndSetEpoch racing with this
		// either came first (and the row now holds its epoch) or waits.
		var missing []string
		for _, p := range call.partitions {
			if _, ok := epochs[p]; !ok {
				missing = append(missing, p)
			}
		}
		b := &pgx.Batch{}
		b.Queue(j.sql.addEpochs, missing)
		lockEpochs(b, lockSQL, missing, epochs)
		if err := c.SendBatch(ctx, b).Close(); err != nil {
			return nil, j.writeError("add partition epochs", ctx, err, false)
		}
	}

	current, fenced, _ := journal.Fence(call.batches, func(p string) (int64, error) { return epochs[p], nil })
	next := slices.Clone(base)
	seqErr := call.checkSequences(current, next)
	if seqErr != nil && len(unknown) < len(call.actors) {
		// The cache may be behind the database: check against it.
		b := &pgx.Batch{}
		queueSeqs(b, j.sql.heads, call.actors, func(i int, seq int64) { base[i] = seq + 1 })
		if err := c.SendBatch(ctx, b).Close(); err != nil {
			return nil, j.writeError("read last sequences", ctx, err, false)
		}
		next = slices.Clone(base)
		seqErr = call.checkSequences(current, next)
	}
	if seqErr != nil {
		return nil, seqErr
	}

	// Round trip 2: write, prune, compact, commit.
	b = &pgx.Batch{}
	j.queueWrites(b, call, current, next, since)
	j.queueHorizons(b, call, current)
	b.Queue("COMMIT")
	if err := c.SendBatch(ctx, b).Close(); err != nil {
		return nil, j.writeError("write", ctx, err, true)
	}
	if s := c.PgConn().TxStatus(); s != 'I' {
		return nil, fmt.Errorf("journal/postgres: append: transaction status %q after COMMIT: nothing written", s)
	}
	for k, a := range call.actors {
		j.heads.saw(a, next[k]-1)
	}
	return fenced, nil
}

// queueSeqs queues sql, a query of one nullable bigint per name in names,
// in their order, and calls set with each (NULL reads as 0).
func queueSeqs(b *pgx.Batch, sql string, names []string, set func(i int, seq int64)) {
	b.Queue(sql, names).Query(func(rows pgx.Rows) error {
		i := 0
		for rows.Next() {
			var seq *int64
			if err := rows.Scan(&seq); err != nil {
				return err
			}
			if i >= len(names) {
				return fmt.Errorf("more rows than the %d asked for", len(names))
			}
			var v int64
			if seq != nil {
				v = *seq
			}
			set(i, v)
			i++
		}
		if err := rows.Err(); err != nil {
			return err
		}
		if i != len(names) {
			return fmt.Errorf("%d rows for %d names", i, len(names))
		}
		return nil
	})
}

// lockEpochs queues the query that share-locks the epoch rows of
// partitions and records their epochs.
func lockEpochs(b *pgx.Batch, sql string, partitions []string, epochs map[string]int64) {
	b.Queue(sql, partitions).Query(func(rows pgx.Rows) error {
		for rows.Next() {
			var p string
			var e int64
			if err := rows.Scan(&p, &e); err != nil {
				return err
			}
			epochs[p] = e
		}
		return rows.Err()
	})
}

// writeError describes an error of a round trip of Append. Only the last
// round trip commits, and only an error that is not from the server leaves
// it unknown whether it did.
func (j *Journal) writeError(step string, ctx context.Context, err error, commits bool) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		if pgErr.Code == "23505" && pgErr.SchemaName == j.t.schemaName && pgErr.ConstraintName == j.t.prefix+"entries_outcome_unique" {
			return fmt.Errorf("%w: %s (in the journal or earlier in this Append); nothing of this Append was written",
				journal.ErrDuplicateOutcome, strings.TrimSuffix(pgErr.Detail, "."))
		}
		if pgErr.Code == "23505" && pgErr.SchemaName == j.t.schemaName && pgErr.TableName == j.t.prefix+"entries" {
			return fmt.Errorf("%w: %s: another writer extended the actor's history first; reload it before appending (%s)",
				journal.ErrSequence, pgErr.Detail, pgErr.ConstraintName)
		}
		return fmt.Errorf("journal/postgres: append: %s: nothing written: %w", step, err)
	}
	if commits {
		if ctxErr := ctx.Err(); ctxErr != nil {
			err = ctxErr
		}
		return fmt.Errorf("journal/postgres: append: %s: interrupted while committing, so it may or may not have been written (appending the same entries again is safe: it fails with a sequence conflict if they were): %w", step, err)
	}
	if ctxErr := ctx.Err(); ctxErr != nil {
		return fmt.Errorf("journal/postgres: append: %s: nothing written: %w", step, ctxErr)
	}
	return fmt.Errorf("journal/postgres: append: %s: nothing written: %w", step, err)
}

// checkSequences runs journal.CheckSequences on the current batches,
// with next holding each actor's next seq.
func (c *appendCall) checkSequences(current []journal.Batch, next []int64) error {
	return journal.CheckSequences(current, func(actor string) *int64 { return &next[c.actorIdx[actor]] })
}

// queueWrites queues the statements that write the current batches: all
// entries in one INSERT, all checkpoints in another, then pruning and
// compaction of the actors that got a checkpoint. Rows go in (actor, seq)
// order, so that two Appends racing on the same actors wait for each other
// instead of deadlocking.
func (j *Journal) queueWrites(b *pgx.Batch, call *appendCall, current []journal.Batch, next []int64, since map[string]int64) {
	var es []journal.Entry
	var cps []journal.Checkpoint
	for _, bt := range current {
		es = append(es, bt.Entries...)
		cps = append(cps, bt.Checkpoints...)
	}
	if len(es) > 0 {
		slices.SortFunc(es, func(a, b journal.Entry) int {
			return cmp.Or(strings.Compare(a.Actor, b.Actor), cmp.Compare(a.Seq, b.Seq))
		})
		actors := make([]string, len(es))
		seqs := make([]int64, len(es))
		kinds := make([]int16, len(es))
		msgs := make([]string, len(es))
		data := make([][]byte, len(es))
		for i, e := range es {
			actors[i], seqs[i], kinds[i], msgs[i], data[i] = e.Actor, e.Seq, int16(e.Kind), e.MsgID, e.Data
		}
		b.Queue(j.sql.insertEntries, actors, seqs, kinds, msgs, data)
	}
	if len(cps) == 0 {
		return
	}

	// A later checkpoint of the same actor and seq replaces an earlier one.
	slices.SortStableFunc(cps, func(a, b journal.Checkpoint) int {
		return cmp.Or(strings.Compare(a.Actor, b.Actor), cmp.Compare(a.Seq, b.Seq))
	})
	var cpActors []string
	actors := make([]string, 0, len(cps))
	seqs := make([]int64, 0, len(cps))
	states := make([][]byte, 0, len(cps))
	for i, cp := range cps {
		if i+1 < len(cps) && cps[i+1].Actor == cp.Actor && cps[i+1].Seq == cp.Seq {
			continue
		}
		actors, seqs, states = append(actors, cp.Actor), append(seqs, cp.Seq), append(states, cp.State)
		if len(cpActors) == 0 || cpActors[len(cpActors)-1] != cp.Actor {
			cpActors = append(cpActors, cp.Actor)
		}
	}
	b.Queue(j.sql.saveCheckpoints, actors, seqs, states)
	if j.keep > 0 {
		b.Queue(j.sql.pruneCheckpoints, cpActors, j.keep)
	}
	if j.compact {
		from := make([]int64, len(cpActors))
		last := make([]int64, len(cpActors))
		for i, a := range cpActors {
			from[i], last[i] = since[a], next[call.actorIdx[a]]-1
		}
		b.Queue(j.sql.compactDelete, cpActors, from, last)
		b.Queue(j.sql.compactClear, cpActors, from)
	}
}

// queueHorizons queues the UPDATE that sets the horizons of the current
// batches, the last one of each partition, if any batch has one.
func (j *Journal) queueHorizons(b *pgx.Batch, call *appendCall, current []journal.Batch) {
	if !call.horizons {
		return
	}
	last := make(map[string]int64)
	for _, bt := range current {
		if bt.Horizon > 0 {
			last[bt.Partition] = bt.Horizon
		}
	}
	if len(last) == 0 {
		return
	}
	partitions := make([]string, 0, len(last))
	horizons := make([]int64, 0, len(last))
	for _, p := range call.partitions { // sorted, as the locks were taken
		if h, ok := last[p]; ok {
			partitions, horizons = append(partitions, p), append(horizons, h)
		}
	}
	b.Queue(j.sql.setHorizons, partitions, horizons)
}
