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

	"github.com/postbox-dev/postbox/internal/testenv"
	"github.com/postbox-dev/postbox/journal"
	"github.com/postbox-dev/postbox/journal/postgres"
)

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func entry(actor string, seq int64, kind journal.Kind, msg string) journal.Entry {
	return journal.Entry{Actor: actor, Seq: seq, Kind: kind, MsgID: msg, Data: fmt.Appendf(nil, "%s#%d", actor, seq)}
}

// query runs sql on its own connection and returns the first column of
// every row, as text.
func query(t *testing.T, sql string, args ...any) []string {
	t.Helper()
	ctx := testContext(t)
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
	ctx := testContext(t)
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
	ctx := testContext(t)
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
	got := query(t, `SELECT version::text || ' ' || name FROM `+pgx.Identifier{schema, "journal_schema_migrations"}.Sanitize())
	if len(got) != 1 || got[0] != "1 0001_init" {
		t.Fatalf("schema_migrations = %q, want one row for 0001_init", got)
	}
	// Opening again changes nothing.
	mustOpen(t, opts).Close()
	if got := query(t, `SELECT version::text FROM `+pgx.Identifier{schema, "journal_schema_migrations"}.Sanitize()); len(got) != 1 {
		t.Fatalf("after reopening, schema_migrations = %q", got)
	}
}

func TestOutcomeIndexIsPartial(t *testing.T) {
	schema := freshSchema(t)
	mustOpen(t, postgres.Options{Schema: schema}).Close()
	defs := query(t, `SELECT indexdef FROM pg_indexes WHERE schemaname = $1 AND indexname = 'journal_entries_outcome'`, schema)
	if len(defs) != 1 || !strings.Contains(defs[0], "(actor, msg_id) WHERE (kind = ANY") {
		t.Fatalf("outcome index = %q, want a partial index on (actor, msg_id) for kinds 3 and 4", defs)
	}
}

func TestRejectsTextPostgresCannotHold(t *testing.T) {
	j := mustOpen(t, postgres.Options{Schema: freshSchema(t)})
	ctx := testContext(t)
	for _, e := range []journal.Entry{
		{Actor: "a/\x00", Seq: 1, Kind: journal.KindAttempt},
		{Actor: "a/1", Seq: 1, Kind: journal.KindAttempt, MsgID: "\xff"},
		{Actor: "a/1", Seq: 1, Kind: 9},
	} {
		err := j.Append(ctx, journal.Batch{Partition: "p0", Entries: []journal.Entry{e}})
		if err == nil || errors.Is(err, journal.ErrSequence) {
			t.Errorf("Append(%+v): err = %v, want a validation error", e, err)
		}
	}
}

// Compaction keeps each actor's last entry, whatever its kind, and the
// outcomes (without data) below the oldest kept checkpoint.
func TestCompactionRows(t *testing.T) {
	schema := freshSchema(t)
	j := mustOpen(t, postgres.Options{Schema: schema, Compact: true, KeepCheckpoints: 1})
	ctx := testContext(t)
	var es []journal.Entry
	for i := int64(0); i < 4; i++ {
		es = append(es, entry("a/1", 2*i+1, journal.KindAttempt, fmt.Sprint("m", i)), entry("a/1", 2*i+2, journal.KindComplete, fmt.Sprint("m", i)))
	}
	es = append(es, entry("a/1", 9, journal.KindAttempt, "m4"))
	err := j.Append(ctx, journal.Batch{Partition: "p0", Entries: es, Checkpoints: []journal.Checkpoint{{Actor: "a/1", Seq: 9}}})
	if err != nil {
		t.Fatal(err)
	}
	got := query(t, `SELECT seq || ':' || kind || ':' || coalesce(encode(data, 'escape'), 'NULL') FROM `+
		pgx.Identifier{schema, "journal_entries"}.Sanitize()+` ORDER BY seq`)
	want := []string{"2:3:NULL", "4:3:NULL", "6:3:NULL", "8:3:NULL", "9:1:a/1#9"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("rows after compaction = %q, want %q", got, want)
	}
}
