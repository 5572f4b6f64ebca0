package postgres_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/postbox-dev/postbox/internal/testenv"
	"github.com/postbox-dev/postbox/journal"
	"github.com/postbox-dev/postbox/journal/journaltest"
	"github.com/postbox-dev/postbox/journal/postgres"
)

// BenchmarkAppend measures group commit against POSTGRES_DSN, as
// journaltest.BenchAppend describes. Its reference writes the same rows
// (same columns and sizes), in batches of the same size, each one INSERT …
// SELECT FROM unnest(…) committed on its own, into a plain table with the
// same primary key and nothing else.
func BenchmarkAppend(b *testing.B) {
	journaltest.BenchAppend(b, func(b *testing.B) journal.Journal {
		return mustOpen(b, postgres.Options{Schema: freshSchema(b)})
	}, func(b *testing.B) journaltest.Reference {
		raw := newRawInserter(b, freshSchema(b))
		return func(batches []journal.Batch) time.Duration { return raw.insert(b, batches) }
	})
}

// rawInserter is the reference writer: one multi-row INSERT per batch,
// committed on its own, into a bare table.
type rawInserter struct {
	pool  *pgxpool.Pool
	table string
}

// newRawInserter makes the bare table in schema, which it creates.
func newRawInserter(b *testing.B, schema string) *rawInserter {
	pool, err := pgxpool.New(context.Background(), testenv.Postgres(b))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(pool.Close)
	table := pgx.Identifier{schema, "raw_entries"}.Sanitize()
	if _, err := pool.Exec(context.Background(), `CREATE SCHEMA `+pgx.Identifier{schema}.Sanitize()+`;
		CREATE TABLE `+table+` (actor text, seq bigint, kind smallint, msg_id text, data bytea, PRIMARY KEY (actor, seq))`); err != nil {
		b.Fatal(err)
	}
	return &rawInserter{pool: pool, table: table}
}

// insert writes the rows of batches in one statement and returns the time
// it took.
func (r *rawInserter) insert(b *testing.B, batches []journal.Batch) time.Duration {
	var actors, msgs []string
	var seqs []int64
	var kinds []int16
	var data [][]byte
	for _, bt := range batches {
		for _, e := range bt.Entries {
			actors, seqs, kinds = append(actors, e.Actor), append(seqs, e.Seq), append(kinds, int16(e.Kind))
			msgs, data = append(msgs, e.MsgID), append(data, e.Data)
		}
	}
	start := time.Now()
	_, err := r.pool.Exec(context.Background(), `INSERT INTO `+r.table+` (actor, seq, kind, msg_id, data)
		SELECT * FROM unnest($1::text[], $2::bigint[], $3::smallint[], $4::text[], $5::bytea[])`,
		actors, seqs, kinds, msgs, data)
	if err != nil {
		b.Fatal(err)
	}
	return time.Since(start)
}
