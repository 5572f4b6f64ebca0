package postgres

import (
	"strings"

	"github.com/postbox-dev/postbox/journal/internal/sqlreads"
)

// statements is the SQL of one journal, its table names filled in. pgx
// prepares each on first use per connection and caches it.
type statements struct {
	reads              [sqlreads.Queries]string
	addEpoch, casEpoch string

	lockEpochs, lockEpochsUpdate, addEpochs, heads, oldestCheckpoints string
	insertEntries, saveCheckpoints, pruneCheckpoints, setHorizons     string
	compactDelete, compactClear                                       string
}

func newStatements(t tables) statements {
	r := strings.NewReplacer(
		"{entries}", t.entries,
		"{checkpoints}", t.checkpoints,
		"{epochs}", t.epochs,
	)
	return statements{
		reads: [sqlreads.Queries]string{
			sqlreads.Read: r.Replace(`SELECT seq, kind, msg_id, data FROM {entries}
				WHERE actor = $1 AND seq >= $2 ORDER BY seq LIMIT $3`),
			sqlreads.LastSeq: r.Replace(`SELECT coalesce(max(seq), 0) FROM {entries} WHERE actor = $1`),
			// The kind term matches the partial index's predicate.
			sqlreads.Outcome: r.Replace(`SELECT seq, kind, data FROM {entries}
				WHERE actor = $1 AND msg_id = $2 AND kind IN (3, 4) ORDER BY seq LIMIT 1`),
			sqlreads.LoadCheckpoint: r.Replace(`SELECT seq, state FROM {checkpoints}
				WHERE actor = $1 AND seq <= $2 ORDER BY seq DESC LIMIT 1`),
			sqlreads.Horizon: r.Replace(`SELECT horizon FROM {epochs} WHERE partition_id = $1`),
			sqlreads.Epoch:   r.Replace(`SELECT epoch FROM {epochs} WHERE partition_id = $1`),
		},

		// CompareAndSetEpoch from 0 first makes sure the row exists, so that
		// the UPDATE has a row to compare; a row with epoch 0 means the same
		// as none.
		addEpoch: r.Replace(`INSERT INTO {epochs} (partition_id, epoch) VALUES ($1, 0)
			ON CONFLICT (partition_id) DO NOTHING`),
		casEpoch: r.Replace(`UPDATE {epochs} SET epoch = $3 WHERE partition_id = $1 AND epoch = $2`),

		// Append's first round trip. Share locks, taken in one order by every
		// Append, let Appends run together but make CompareAndSetEpoch wait
		// for them, and them for it.
		lockEpochs: r.Replace(`SELECT partition_id, epoch FROM {epochs}
			WHERE partition_id = ANY($1::text[]) ORDER BY partition_id FOR SHARE`),
		// An Append that sets a horizon writes the rows it locks: it takes
		// the lock its UPDATE needs up front, in the same order, rather
		// than upgrade a share lock another Append may hold too, which
		// would deadlock.
		lockEpochsUpdate: r.Replace(`SELECT partition_id, epoch FROM {epochs}
			WHERE partition_id = ANY($1::text[]) ORDER BY partition_id FOR NO KEY UPDATE`),
		addEpochs: r.Replace(`INSERT INTO {epochs} (partition_id, epoch)
			SELECT p, 0 FROM unnest($1::text[]) AS p ORDER BY p
			ON CONFLICT (partition_id) DO NOTHING`),
		// Each actor's last seq, NULL for none, in the order of $1; each
		// subquery is one descent of the primary key.
		heads: r.Replace(`SELECT (SELECT e.seq FROM {entries} e WHERE e.actor = a.actor ORDER BY e.seq DESC LIMIT 1)
			FROM unnest($1::text[]) WITH ORDINALITY AS a(actor, i) ORDER BY a.i`),
		// Each actor's oldest checkpoint, NULL for none, in the order of $1:
		// where its last compaction stopped.
		oldestCheckpoints: r.Replace(`SELECT (SELECT c.seq FROM {checkpoints} c WHERE c.actor = a.actor ORDER BY c.seq LIMIT 1)
			FROM unnest($1::text[]) WITH ORDINALITY AS a(actor, i) ORDER BY a.i`),

		// Append's second round trip: one statement per table, every row
		// in arrays.
		insertEntries: r.Replace(`INSERT INTO {entries} (actor, seq, kind, msg_id, data)
			SELECT * FROM unnest($1::text[], $2::bigint[], $3::smallint[], $4::text[], $5::bytea[])`),
		saveCheckpoints: r.Replace(`INSERT INTO {checkpoints} (actor, seq, state)
			SELECT * FROM unnest($1::text[], $2::bigint[], $3::bytea[])
			ON CONFLICT (actor, seq) DO UPDATE SET state = excluded.state`),
		// Round trip 1 made sure every partition of the call has a row.
		setHorizons: r.Replace(`UPDATE {epochs} e SET horizon = h.horizon
			FROM unnest($1::text[], $2::bigint[]) AS h(partition_id, horizon)
			WHERE e.partition_id = h.partition_id`),
		// Deletes, for each actor of $1, its checkpoints older than the
		// newest $2.
		pruneCheckpoints: r.Replace(`DELETE FROM {checkpoints} c
			USING unnest($1::text[]) AS a(actor)
			CROSS JOIN LATERAL (SELECT k.seq FROM {checkpoints} k WHERE k.actor = a.actor
				ORDER BY k.seq DESC OFFSET $2 LIMIT 1) AS cut
			WHERE c.actor = a.actor AND c.seq <= cut.seq`),
		// For each actor of $1: its attempts and effects after $2 (where
		// the last compaction stopped), up to its oldest kept checkpoint,
		// but never its last entry ($3).
		compactDelete: r.Replace(`DELETE FROM {entries} e USING (
				SELECT a.actor, a.since, least(
					(SELECT min(c.seq) FROM {checkpoints} c WHERE c.actor = a.actor), a.last - 1) AS upto
				FROM unnest($1::text[], $2::bigint[], $3::bigint[]) AS a(actor, since, last)
			) x
			WHERE e.actor = x.actor AND e.seq > x.since AND e.seq <= x.upto AND e.kind IN (1, 2)`),
		compactClear: r.Replace(`UPDATE {entries} e SET data = NULL FROM (
				SELECT a.actor, a.since, (SELECT min(c.seq) FROM {checkpoints} c WHERE c.actor = a.actor) AS upto
				FROM unnest($1::text[], $2::bigint[]) AS a(actor, since)
			) x
			WHERE e.actor = x.actor AND e.seq > x.since AND e.seq <= x.upto
				AND e.kind IN (3, 4) AND e.data IS NOT NULL`),
	}
}
