package postgres_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/postbox-dev/postbox/internal/testenv"
	"github.com/postbox-dev/postbox/journal"
	"github.com/postbox-dev/postbox/journal/journaltest"
	"github.com/postbox-dev/postbox/journal/postgres"
)

// uniqueName returns prefix followed by random hex: a schema or table
// prefix no other test uses.
func uniqueName(prefix string) string {
	b := make([]byte, 6)
	rand.Read(b)
	return prefix + hex.EncodeToString(b)
}

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
	schema := uniqueName("pbtest_")
	t.Cleanup(func() { admin(t, `DROP SCHEMA IF EXISTS `+pgx.Identifier{schema}.Sanitize()+` CASCADE`) })
	return schema
}

func mustOpen(t testing.TB, opts postgres.Options) *postgres.Journal {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	j, err := postgres.Open(ctx, testenv.Postgres(t), opts)
	if err != nil {
		t.Fatalf("Open(%+v): %v", opts, err)
	}
	t.Cleanup(func() { j.Close() })
	return j
}

// opener opens each test's journal in a schema of its own (or, with
// sharedSchema, under a table prefix of its own), and remembers where, so
// that reopen can find it again.
type opener struct {
	opts         postgres.Options
	sharedSchema bool
	where        sync.Map // journal.Journal -> postgres.Options
}

func (o *opener) open(t *testing.T) journal.Journal {
	t.Helper()
	opts := o.opts
	testenv.Postgres(t)
	if o.sharedSchema {
		opts.TablePrefix = uniqueName("t") + "_"
		t.Cleanup(func() {
			for _, table := range []string{"entries", "checkpoints", "epochs", "schema_migrations"} {
				admin(t, `DROP TABLE IF EXISTS `+pgx.Identifier{opts.TablePrefix + table}.Sanitize())
			}
		})
	} else {
		opts.Schema = freshSchema(t)
	}
	return o.openAt(t, opts)
}

func (o *opener) openAt(t *testing.T, opts postgres.Options) journal.Journal {
	j := mustOpen(t, opts)
	o.where.Store(journal.Journal(j), opts)
	return j
}

func (o *opener) reopen(t *testing.T, j journal.Journal) journal.Journal {
	t.Helper()
	opts, ok := o.where.Load(j)
	if !ok {
		t.Fatal("reopen: journal was not opened by this opener")
	}
	return o.openAt(t, opts.(postgres.Options))
}

func TestConformance(t *testing.T) {
	testenv.Postgres(t)
	o := &opener{}
	journaltest.Run(t, journaltest.Features{
		KeepCheckpoints: postgres.DefaultKeepCheckpoints,
		Reopen:          o.reopen,
		Share:           o.reopen,
	}, o.open)
}

func TestConformanceCompact(t *testing.T) {
	testenv.Postgres(t)
	o := &opener{opts: postgres.Options{Compact: true, KeepCheckpoints: 2}}
	journaltest.Run(t, journaltest.Features{
		KeepCheckpoints: 2,
		Compacts:        true,
		Reopen:          o.reopen,
		Share:           o.reopen,
	}, o.open)
}

func TestConformanceKeepAllCheckpoints(t *testing.T) {
	testenv.Postgres(t)
	o := &opener{opts: postgres.Options{KeepCheckpoints: -1}}
	journaltest.Run(t, journaltest.Features{Reopen: o.reopen, Share: o.reopen}, o.open)
}

// The journal's tables in the connection's schema, told apart by prefix.
func TestConformanceTablePrefix(t *testing.T) {
	testenv.Postgres(t)
	o := &opener{sharedSchema: true}
	journaltest.Run(t, journaltest.Features{
		KeepCheckpoints: postgres.DefaultKeepCheckpoints,
		Reopen:          o.reopen,
		Share:           o.reopen,
	}, o.open)
}
