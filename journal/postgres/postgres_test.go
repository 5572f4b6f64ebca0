package postgres_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/postbox-dev/postbox/internal/testenv"
	"github.com/postbox-dev/postbox/journal"
	"github.com/postbox-dev/postbox/journal/internal/backendtest"
	"github.com/postbox-dev/postbox/journal/journaltest"
	"github.com/postbox-dev/postbox/journal/postgres"
)

// admin runs one statement on its own connection, outside any journal.
func admin(t testing.TB, sql string, args ...any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, testenv.Postgres(t))
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// freshSchema returns a schema name no other test uses, dropped with all
// it holds when t ends.
func freshSchema(t testing.TB) string {
	t.Helper()
	testenv.Postgres(t) // skip before a cleanup that needs the server
	schema := backendtest.UniqueName("pbtest_")
	t.Cleanup(func() { admin(t, `DROP SCHEMA IF EXISTS `+pgx.Identifier{schema}.Sanitize()+` CASCADE`) })
	return schema
}

func mustOpen(t testing.TB, opts postgres.Options) *postgres.Journal {
	return backendtest.Open(t, opts, func(ctx context.Context) (*postgres.Journal, error) {
		return postgres.Open(ctx, testenv.Postgres(t), opts)
	})
}

func TestConformance(t *testing.T)        { conformance(t, journaltest.Defaults, freshSchemaOptions) }
func TestConformanceCompact(t *testing.T) { conformance(t, journaltest.Compacting, freshSchemaOptions) }
func TestConformanceKeepAllCheckpoints(t *testing.T) {
	conformance(t, journaltest.KeepAll, freshSchemaOptions)
}

// The journal's tables in the connection's schema, told apart by prefix.
func TestConformanceTablePrefix(t *testing.T) {
	conformance(t, journaltest.Defaults, freshPrefixOptions)
}

// conformance runs the suite on journals in stores of their own, as fresh
// places them.
func conformance(t *testing.T, r journaltest.Retention, fresh func(t *testing.T, opts postgres.Options) postgres.Options) {
	testenv.Postgres(t)
	journaltest.RunStores(t, r.Features(), func(t *testing.T) postgres.Options {
		return fresh(t, postgres.Options{KeepCheckpoints: r.KeepCheckpoints, Compact: r.Compact})
	}, func(t *testing.T, opts postgres.Options) journal.Journal {
		return mustOpen(t, opts)
	})
}

// freshSchemaOptions places the journal in a schema of its own.
func freshSchemaOptions(t *testing.T, opts postgres.Options) postgres.Options {
	opts.Schema = freshSchema(t)
	return opts
}

// freshPrefixOptions places the journal in the connection's schema, under
// a table prefix of its own, its tables dropped when t ends.
func freshPrefixOptions(t *testing.T, opts postgres.Options) postgres.Options {
	testenv.Postgres(t)
	opts.TablePrefix = backendtest.UniqueName("t") + "_"
	t.Cleanup(func() {
		for _, table := range []string{"entries", "checkpoints", "epochs", "schema_migrations"} {
			admin(t, `DROP TABLE IF EXISTS `+pgx.Identifier{opts.TablePrefix + table}.Sanitize())
		}
	})
	return opts
}

// query runs sql on its own connection and returns the first column of
// every row, as text.
func query(t *testing.T, sql string, args ...any) []string {
	t.Helper()
	ctx := backendtest.Context(t)
	conn, err := pgx.Connect(ctx, testenv.Postgres(t))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, sql, args...)
	if err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return out
}

func TestOpenRejectsBadOptions(t *testing.T) {
	ctx := backendtest.Context(t)
	for _, tc := range []struct {
		opts postgres.Options
		want string
	}{
		{postgres.Options{TablePrefix: "Journal"}, "Options.TablePrefix"},
		{postgres.Options{TablePrefix: "j; DROP TABLE x; --"}, "Options.TablePrefix"},
		{postgres.Options{TablePrefix: strings.Repeat("j", 41)}, "Options.TablePrefix"},
		{postgres.Options{Schema: strings.Repeat("s", 64)}, "Options.Schema"},
	} {
		// Options are checked before connecting: no server needed.
		_, err := postgres.Open(ctx, "postgres://nobody@127.0.0.1:1/none", tc.opts)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Open(%+v): err = %v, want one naming %s", tc.opts, err, tc.want)
		}
	}
}

func TestOpenUnreachableSaysWhatToDo(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, err := postgres.Open(ctx, "postgres://nobody@127.0.0.1:1/none?connect_timeout=5", postgres.Options{})
	if err == nil || !strings.Contains(err.Error(), "scripts/services.sh") {
		t.Fatalf("Open of a closed port: err = %v, want a hint at scripts/services.sh", err)
	}
}

// Processes starting together migrate the schema once, without errors.
func TestOpenConcurrentMigratesOnce(t *testing.T) {
	schema := freshSchema(t)
	opts := postgres.Options{Schema: schema}
	ctx := backendtest.Context(t)
	const n = 4
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			j, err := postgres.Open(ctx, testenv.Postgres(t), opts)
			if err == nil {
				j.Close()
			}
			errs[i] = err
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("Open %d: %v", i, err)
		}
	}
	got := query(t, `SELECT version::text || ' ' || name FROM `+pgx.Identifier{schema, "journal_schema_migrations"}.Sanitize()+` ORDER BY version`)
	if strings.Join(got, ", ") != "1 0001_init, 2 0002_unique_outcomes, 3 0003_horizons" {
		t.Fatalf("schema_migrations = %q, want one row for each migration", got)
	}
	// Opening again changes nothing.
	mustOpen(t, opts).Close()
	if got := query(t, `SELECT version::text FROM `+pgx.Identifier{schema, "journal_schema_migrations"}.Sanitize()); len(got) != 3 {
		t.Fatalf("after reopening, schema_migrations = %q", got)
	}
}

func TestOutcomeIndexIsPartialAndUnique(t *testing.T) {
	schema := freshSchema(t)
	mustOpen(t, postgres.Options{Schema: schema}).Close()
	defs := query(t, `SELECT indexname || ': ' || indexdef FROM pg_indexes WHERE schemaname = $1 AND indexname LIKE 'journal_entries_outcome%'`, schema)
	if len(defs) != 1 || !strings.HasPrefix(defs[0], "journal_entries_outcome_unique: CREATE UNIQUE INDEX") ||
		!strings.Contains(defs[0], "(actor, msg_id) WHERE (kind = ANY") {
		t.Fatalf("outcome indexes = %q, want one unique partial index on (actor, msg_id) for kinds 3 and 4", defs)
	}
}

// A journal made before outcomes were unique gets the unique index on
// Open; one whose messages already have two outcomes is not opened, and
// the error says why.
func TestMigrationMakesOutcomesUnique(t *testing.T) {
	ctx := backendtest.Context(t)
	asVersion1 := func(t *testing.T, dup bool) string {
		schema := freshSchema(t)
		j := mustOpen(t, postgres.Options{Schema: schema})
		err := j.Append(ctx, journal.Batch{Partition: "p0", Entries: []journal.Entry{
			backendtest.Entry("a/1", 1, journal.KindComplete, "m"), backendtest.Entry("a/1", 2, journal.KindAttempt, "m"),
		}})
		if err != nil {
			t.Fatal(err)
		}
		j.Close()
		q := pgx.Identifier{schema}.Sanitize()
		admin(t, `DROP INDEX `+q+`.journal_entries_outcome_unique`)
		admin(t, `CREATE INDEX journal_entries_outcome ON `+q+`.journal_entries (actor, msg_id) WHERE kind IN (3, 4)`)
		admin(t, `DELETE FROM `+q+`.journal_schema_migrations WHERE version = 2`)
		if dup {
			admin(t, `UPDATE `+q+`.journal_entries SET kind = 4 WHERE seq = 2`)
		}
		return schema
	}

	schema := asVersion1(t, false)
	j := mustOpen(t, postgres.Options{Schema: schema})
	if got := query(t, `SELECT indexname FROM pg_indexes WHERE schemaname = $1 AND indexname LIKE 'journal_entries_outcome%'`, schema); strings.Join(got, " ") != "journal_entries_outcome_unique" {
		t.Fatalf("outcome indexes after the migration: %q", got)
	}
	err := j.Append(ctx, journal.Batch{Partition: "p0", Entries: []journal.Entry{backendtest.Entry("a/1", 3, journal.KindDeadLetter, "m")}})
	if !errors.Is(err, journal.ErrDuplicateOutcome) {
		t.Fatalf("a second outcome after the migration: %v, want ErrDuplicateOutcome", err)
	}

	_, err = postgres.Open(ctx, testenv.Postgres(t), postgres.Options{Schema: asVersion1(t, true)})
	if err == nil || !strings.Contains(err.Error(), "0002_unique_outcomes") || !strings.Contains(err.Error(), "is duplicated") {
		t.Fatalf("Open of a journal with a message of two outcomes: %v, want the migration's error", err)
	}
}

// A journal made before partitions had horizons has no horizon column:
// Open adds it, partitions read as having none, and Append stores them, for
// a partition with an epoch row and for one without.
func TestMigrationAddsHorizons(t *testing.T) {
	ctx := backendtest.Context(t)
	schema := freshSchema(t)
	j := mustOpen(t, postgres.Options{Schema: schema})
	e, err := journal.AcquireEpoch(ctx, j, "p0")
	if err != nil {
		t.Fatal(err)
	}
	if err := j.Append(ctx, journal.Batch{Partition: "p0", Epoch: e, Entries: []journal.Entry{backendtest.Entry("a/1", 1, journal.KindComplete, "m1")}}); err != nil {
		t.Fatal(err)
	}
	j.Close()
	q := pgx.Identifier{schema}.Sanitize()
	admin(t, `ALTER TABLE `+q+`.journal_epochs DROP COLUMN horizon`)
	admin(t, `DELETE FROM `+q+`.journal_schema_migrations WHERE version = 3`)
	columns := func() string {
		return strings.Join(query(t, `SELECT column_name::text FROM information_schema.columns
			WHERE table_schema = $1 AND table_name = 'journal_epochs' ORDER BY ordinal_position`, schema), " ")
	}
	if got := columns(); got != "partition_id epoch" {
		t.Fatalf("columns of the old epochs table: %q", got)
	}

	j = mustOpen(t, postgres.Options{Schema: schema})
	if got := columns(); got != "partition_id epoch horizon" {
		t.Fatalf("columns of the epochs table after the migration: %q", got)
	}
	if got, err := j.Epoch(ctx, "p0"); err != nil || got != e {
		t.Fatalf("Epoch(p0) after the migration = %d, %v; want %d", got, err, e)
	}
	for _, p := range []string{"p0", "p1"} {
		if h, ok, err := j.Horizon(ctx, p); err != nil || ok || h != 0 {
			t.Fatalf("Horizon(%s) after the migration = %d, %v, %v; want none", p, h, ok, err)
		}
	}
	err = j.Append(ctx,
		journal.Batch{Partition: "p0", Epoch: e, Entries: []journal.Entry{backendtest.Entry("a/1", 2, journal.KindAttempt, "m2")}, Horizon: 1<<62 + 1},
		journal.Batch{Partition: "p1", Horizon: 7})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := journal.AcquireEpoch(ctx, j, "p1"); err != nil || got != 1 {
		t.Fatalf("AcquireEpoch(p1) after its horizon made its row = %d, %v; want 1", got, err)
	}
	for p, want := range map[string]int64{"p0": 1<<62 + 1, "p1": 7} {
		if h, ok, err := j.Horizon(ctx, p); err != nil || !ok || h != want {
			t.Fatalf("Horizon(%s) = %d, %v, %v; want %d", p, h, ok, err, want)
		}
	}
}

// Appends that set a partition's horizon, racing with Appends that do not
// and with epoch moves, neither deadlock nor fail: they take the row's
// update lock up front instead of upgrading a shared one.
func TestConcurrentHorizons(t *testing.T) {
	ctx := backendtest.Context(t)
	j := mustOpen(t, postgres.Options{Schema: freshSchema(t)})
	const writers, rounds = 6, 15
	start := time.Now()
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			actor := fmt.Sprint("a/", w)
			for r := range int64(rounds) {
				bs := []journal.Batch{{Partition: "p0", Entries: []journal.Entry{backendtest.Entry(actor, r+1, journal.KindAttempt, "m")}}}
				if w%2 == 0 {
					bs[0].Horizon = int64(w)*rounds + r + 1
					bs = append(bs, journal.Batch{Partition: "p1", Horizon: r + 1})
				}
				// p1's epoch moves meanwhile: its batch may be fenced.
				if err := j.Append(ctx, bs...); err != nil && !(journal.Fenced(err, "p1") && !journal.Fenced(err, "p0")) {
					t.Errorf("writer %d round %d: %v", w, r, err)
					return
				}
			}
		})
	}
	wg.Go(func() {
		for range rounds {
			if _, err := journal.AcquireEpoch(ctx, j, "p1"); err != nil {
				t.Errorf("AcquireEpoch(p1): %v", err)
				return
			}
		}
	})
	wg.Wait()
	if d := time.Since(start); d > 20*time.Second {
		t.Errorf("%d Appends took %v: deadlocks detected and retried?", writers*rounds, d)
	}
	if h, ok, err := j.Horizon(ctx, "p0"); err != nil || !ok || h < 1 || h > writers*rounds {
		t.Fatalf("Horizon(p0) = %d, %v, %v; want one a writer set", h, ok, err)
	}
}

func TestRejectsTextPostgresCannotHold(t *testing.T) {
	j := mustOpen(t, postgres.Options{Schema: freshSchema(t)})
	ctx := backendtest.Context(t)
	for _, b := range []journal.Batch{
		{Partition: "p0", Entries: []journal.Entry{{Actor: "a/\x00", Seq: 1, Kind: journal.KindAttempt, MsgID: "m"}}},
		{Partition: "p0", Entries: []journal.Entry{{Actor: "a/1", Seq: 1, Kind: journal.KindAttempt, MsgID: "\xff"}}},
		{Partition: "p0", Entries: []journal.Entry{{Actor: "a/1", Seq: 1, Kind: 9, MsgID: "m"}}},
		{Partition: "p\x00", Entries: []journal.Entry{{Actor: "a/1", Seq: 1, Kind: journal.KindAttempt, MsgID: "m"}}},
	} {
		err := j.Append(ctx, b)
		if !errors.Is(err, journal.ErrInvalid) || !journal.IsPermanent(err) {
			t.Errorf("Append(%+v): err = %v, want ErrInvalid", b, err)
		}
	}
}

// Compaction keeps each actor's last entry, whatever its kind, and the
// outcomes (without data) below the oldest kept checkpoint.
func TestCompactionRows(t *testing.T) {
	schema := freshSchema(t)
	j := mustOpen(t, postgres.Options{Schema: schema, Compact: true, KeepCheckpoints: 1})
	ctx := backendtest.Context(t)
	backendtest.Compacted(t, ctx, j)
	got := query(t, `SELECT seq || ':' || kind || ':' || coalesce(encode(data, 'escape'), 'NULL') FROM `+
		pgx.Identifier{schema, "journal_entries"}.Sanitize()+` ORDER BY seq`)
	want := []string{"2:3:NULL", "4:3:NULL", "6:3:NULL", "8:3:NULL", "9:1:a/1#9"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("rows after compaction = %q, want %q", got, want)
	}
}

// New runs on the caller's pool, migrates as Open does, and leaves the
// pool open on Close.
func TestNewUsesTheCallersPool(t *testing.T) {
	ctx := backendtest.Context(t)
	pool, err := pgxpool.New(ctx, testenv.Postgres(t))
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	j, err := postgres.New(ctx, pool, postgres.Options{Schema: freshSchema(t)})
	if err != nil {
		t.Fatal(err)
	}
	b := journal.Batch{Partition: "p0", Entries: []journal.Entry{backendtest.Entry("t/1", 1, journal.KindComplete, "m1")}}
	if err := j.Append(ctx, b); err != nil {
		t.Fatal(err)
	}
	if _, ok, err := j.Outcome(ctx, "t/1", "m1"); err != nil || !ok {
		t.Fatalf("outcome: %v, %v", ok, err)
	}
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := j.LastSeq(ctx, "t/1"); !errors.Is(err, journal.ErrClosed) {
		t.Errorf("LastSeq after Close: %v, want ErrClosed", err)
	}
	if err := pool.Ping(ctx); err != nil {
		t.Errorf("the caller's pool after the journal closed: %v", err)
	}
	if _, err := postgres.New(ctx, pool, postgres.Options{TablePrefix: "Bad"}); err == nil || !strings.Contains(err.Error(), "Options.TablePrefix") {
		t.Errorf("New with a bad table prefix: %v, want an error naming it", err)
	}
}

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
