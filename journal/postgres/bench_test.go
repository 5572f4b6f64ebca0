package postgres_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/postbox-dev/postbox/internal/testenv"
	"github.com/postbox-dev/postbox/journal"
	"github.com/postbox-dev/postbox/journal/postgres"
)

const (
	benchPartitions = 16
	benchDataSize   = 200
)

// BenchmarkAppend measures group commit: each op is one Append of one
// entry for each of N actors, spread over 16 partitions with their epochs
// acquired, against POSTGRES_DSN. It reports
//
//	rows/s      entries the journal wrote per second
//	appends/s   Append calls per second
//	raw_rows/s  the reference: the same rows (same columns and sizes), in
//	            batches of the same size, each one INSERT … SELECT FROM
//	            unnest(…) committed on its own, into a plain table with the
//	            same primary key and nothing else
//	raw_ratio   rows/s ÷ raw_rows/s: what share of a bare insert's rate
//	            the journal keeps after fencing, sequence checks and the
//	            outcome index
//
// The journal and the reference alternate op by op, so that other load on
// the machine slows both alike.
func BenchmarkAppend(b *testing.B) {
	for _, tc := range []struct {
		actors int
		kinds  []journal.Kind
	}{
		{1000, []journal.Kind{journal.KindAttempt}},
		// Half the entries are outcomes and so also go into the outcome
		// index, as in a host that journals an attempt and a completion.
		{1000, []journal.Kind{journal.KindAttempt, journal.KindComplete}},
		{10, []journal.Kind{journal.KindAttempt, journal.KindComplete}},
	} {
		name := fmt.Sprintf("actors=%d/attempts", tc.actors)
		if len(tc.kinds) > 1 {
			name = fmt.Sprintf("actors=%d/attempt+complete", tc.actors)
		}
		b.Run(name, func(b *testing.B) { benchAppend(b, tc.actors, tc.kinds) })
	}
}

func benchAppend(b *testing.B, nActors int, kinds []journal.Kind) {
	ctx := context.Background()
	schema := freshSchema(b)
	j := mustOpen(b, postgres.Options{Schema: schema})
	actors := make([]string, nActors)
	for i := range actors {
		actors[i] = fmt.Sprintf("counter/%d", i)
	}
	batches := make([]journal.Batch, min(benchPartitions, nActors))
	for p := range batches {
		name := fmt.Sprintf("p%d", p)
		e, err := journal.AcquireEpoch(ctx, j, name)
		if err != nil {
			b.Fatal(err)
		}
		batches[p] = journal.Batch{Partition: name, Epoch: e}
	}
	data := make([]byte, benchDataSize)
	raw := newRawInserter(b, schema)
	defer raw.pool.Close()

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
			p := &batches[a%len(batches)]
			p.Entries = append(p.Entries, journal.Entry{Actor: actor, Seq: seq, Kind: kind, MsgID: msg, Data: data})
		}
		start := time.Now()
		if err := j.Append(ctx, batches...); err != nil {
			b.Fatal(err)
		}
		journalTime += time.Since(start)

		b.StopTimer()
		rawTime += raw.insert(b, batches)
		b.StartTimer()
	}
	b.StopTimer()

	rows := float64(b.N * nActors)
	rate, rawRate := rows/journalTime.Seconds(), rows/rawTime.Seconds()
	b.ReportMetric(rate, "rows/s")
	b.ReportMetric(float64(b.N)/journalTime.Seconds(), "appends/s")
	b.ReportMetric(rawRate, "raw_rows/s")
	b.ReportMetric(rate/rawRate, "raw_ratio")
}

// rawInserter is the reference writer: one multi-row INSERT per batch,
// committed on its own, into a bare table.
type rawInserter struct {
	pool  *pgxpool.Pool
	table string
}

func newRawInserter(b *testing.B, schema string) *rawInserter {
	pool, err := pgxpool.New(context.Background(), testenv.Postgres(b))
	if err != nil {
		b.Fatal(err)
	}
	table := pgx.Identifier{schema, "raw_entries"}.Sanitize()
	if _, err := pool.Exec(context.Background(), `CREATE TABLE `+table+` (
		actor text, seq bigint, kind smallint, msg_id text, data bytea, PRIMARY KEY (actor, seq))`); err != nil {
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
