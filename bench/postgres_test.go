package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/postbox-dev/postbox/actors/counter"
	"github.com/postbox-dev/postbox/internal/entry"
	"github.com/postbox-dev/postbox/internal/testenv"
	"github.com/postbox-dev/postbox/journal"
	"github.com/postbox-dev/postbox/journal/postgres"
)

// pgBenchSchema creates a schema no other run uses on the server at
// POSTGRES_DSN (skipping the benchmark without it), and drops it when the
// benchmark ends.
func pgBenchSchema(b *testing.B) (dsn, schema string) {
	b.Helper()
	dsn = testenv.Postgres(b)
	ctx := context.Background()
	schema = "bench_" + strconv.FormatInt(time.Now().UnixNano(), 36)
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE SCHEMA "+schema); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		if conn, err := pgx.Connect(ctx, dsn); err == nil {
			conn.Exec(ctx, "DROP SCHEMA "+schema+" CASCADE")
			conn.Close(ctx)
		}
	})
	return dsn, schema
}

// hostRounds builds what a host under load hands the journal: round r is
// one group commit with one entry for each of the actors, spread over the
// partitions by actor. An actor's messages alternate between the effect
// entry of its notify side effect and the completion entry, encoded as the
// host encodes them; every cpEvery-th completion of an actor carries a
// checkpoint of its state. Actors reach their checkpoints in different
// rounds, as they do under real load.
type hostRounds struct {
	actors     []string
	partitions []journal.Batch // Partition and Epoch set
	cpEvery    int
	payload    []byte
	at         time.Time
}

func (h *hostRounds) round(r int) []journal.Batch {
	batches := make([]journal.Batch, len(h.partitions))
	for p := range batches {
		batches[p] = journal.Batch{Partition: h.partitions[p].Partition, Epoch: h.partitions[p].Epoch}
	}
	seq := int64(r + 1)
	msg := r / 2 // the actor's message number
	for a, actor := range h.actors {
		bt := &batches[a%len(batches)]
		id := fmt.Sprintf("load-%d-%d", msg, a)
		if r%2 == 0 {
			bt.Entries = append(bt.Entries, journal.Entry{Actor: actor, Seq: seq, Kind: journal.KindEffect, MsgID: id,
				Data: entry.Encode(entry.Effect{Index: 0, Name: "notify", Result: []byte(strconv.Itoa(msg + 1))})})
			continue
		}
		bt.Entries = append(bt.Entries, journal.Entry{Actor: actor, Seq: seq, Kind: journal.KindComplete, MsgID: id,
			Data: entry.Encode(entry.Complete{N: 1, At: h.at, Payload: h.payload})})
		if (msg+1+a)%h.cpEvery == 0 {
			state, _ := json.Marshal(counter.State{Value: int64(msg + 1), Applied: int64(msg + 1)})
			bt.Checkpoints = append(bt.Checkpoints, journal.Checkpoint{Actor: actor, Seq: seq, State: state})
		}
	}
	return batches
}

// rawPGWriter is the reference: the same rows, written by one round trip
// per group commit into bare tables with the same primary keys and
// nothing else (no epochs, no sequence checks, no outcome index, no
// pruning): one multi-row INSERT … SELECT FROM unnest(…) of the entries,
// and one of the checkpoints when there are any, in one implicit
// transaction.
type rawPGWriter struct {
	pool                 *pgxpool.Pool
	entries, checkpoints string
}

func newRawPGWriter(b *testing.B, dsn, schema string) *rawPGWriter {
	b.Helper()
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, dsn)
	if err != nil {
		b.Fatal(err)
	}
	w := &rawPGWriter{pool: pool, entries: schema + ".raw_entries", checkpoints: schema + ".raw_checkpoints"}
	for _, ddl := range []string{
		`CREATE TABLE ` + w.entries + ` (actor text NOT NULL, seq bigint NOT NULL, kind smallint NOT NULL,
			msg_id text NOT NULL, data bytea, PRIMARY KEY (actor, seq))`,
		`CREATE TABLE ` + w.checkpoints + ` (actor text NOT NULL, seq bigint NOT NULL, state bytea,
			PRIMARY KEY (actor, seq))`,
	} {
		if _, err := pool.Exec(ctx, ddl); err != nil {
			b.Fatal(err)
		}
	}
	return w
}

// write writes the rows of batches and returns how long it took.
func (w *rawPGWriter) write(b *testing.B, batches []journal.Batch) time.Duration {
	var actors, msgs, cpActors []string
	var seqs, cpSeqs []int64
	var kinds []int16
	var data, states [][]byte
	for _, bt := range batches {
		for _, e := range bt.Entries {
			actors, seqs, kinds = append(actors, e.Actor), append(seqs, e.Seq), append(kinds, int16(e.Kind))
			msgs, data = append(msgs, e.MsgID), append(data, e.Data)
		}
		for _, cp := range bt.Checkpoints {
			cpActors, cpSeqs, states = append(cpActors, cp.Actor), append(cpSeqs, cp.Seq), append(states, cp.State)
		}
	}
	q := &pgx.Batch{}
	q.Queue(`INSERT INTO `+w.entries+` SELECT * FROM unnest($1::text[], $2::bigint[], $3::smallint[], $4::text[], $5::bytea[])`,
		actors, seqs, kinds, msgs, data)
	if len(cpActors) > 0 {
		q.Queue(`INSERT INTO `+w.checkpoints+` SELECT * FROM unnest($1::text[], $2::bigint[], $3::bytea[])`, cpActors, cpSeqs, states)
	}
	start := time.Now()
	if err := w.pool.SendBatch(context.Background(), q).Close(); err != nil {
		b.Fatal(err)
	}
	return time.Since(start)
}

// BenchmarkPostgresJournal: group commits as a host makes them under load
// — each Append carries one entry for each of 1,000 actors, spread over 8
// partitions whose epochs are held, with checkpoints every 100 completions
// per actor — against the same rows written raw (see rawPGWriter) in the
// same run. The two alternate commit by commit, so that other load on the
// machine slows both alike. It reports
//
//	appends/s   journal entries (rows) appended per second
//	calls/s     Append calls (group commits) per second
//	raw_rows/s  the reference's rows per second
//	raw_ratio   appends/s ÷ raw_rows/s
func BenchmarkPostgresJournal(b *testing.B) {
	dsn, schema := pgBenchSchema(b)
	ctx := context.Background()
	j, err := postgres.Open(ctx, dsn, postgres.Options{Schema: schema})
	if err != nil {
		b.Fatal(err)
	}
	defer j.Close()
	raw := newRawPGWriter(b, dsn, schema)
	defer raw.pool.Close()

	// Each op is 200 group commits (100 messages per actor), so that
	// -benchtime 1x measures something.
	const actors, partitions, commits = 1000, 8, 200
	rounds := &hostRounds{cpEvery: 100, payload: []byte(`{"add":1}`), at: time.Now().UTC()}
	for a := range actors {
		rounds.actors = append(rounds.actors, fmt.Sprintf("counter/%d", a))
	}
	for p := range partitions {
		name := fmt.Sprintf("mailbox/%d", p)
		epoch, err := journal.AcquireEpoch(ctx, j, name)
		if err != nil {
			b.Fatal(err)
		}
		rounds.partitions = append(rounds.partitions, journal.Batch{Partition: name, Epoch: epoch})
	}

	var journalTime, rawTime time.Duration
	b.ResetTimer()
	for i := range b.N {
		for r := i * commits; r < (i+1)*commits; r++ {
			batches := rounds.round(r)
			start := time.Now()
			if err := j.Append(ctx, batches...); err != nil {
				b.Fatal(err)
			}
			journalTime += time.Since(start)
			b.StopTimer()
			rawTime += raw.write(b, batches)
			b.StartTimer()
		}
	}
	b.StopTimer()
	rows := float64(b.N * commits * actors)
	b.ReportMetric(rows/journalTime.Seconds(), "appends/s")
	b.ReportMetric(float64(b.N*commits)/journalTime.Seconds(), "calls/s")
	b.ReportMetric(rows/rawTime.Seconds(), "raw_rows/s")
	b.ReportMetric(rawTime.Seconds()/journalTime.Seconds(), "raw_ratio")
}
