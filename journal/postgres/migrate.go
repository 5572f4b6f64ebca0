package postgres

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"hash/fnv"
	"io/fs"
	"path"
	"slices"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

// migration is one embedded schema change: migrations/NNNN_name.sql is
// version NNNN.
type migration struct {
	version int
	name    string
	sql     string
}

// migrations returns the embedded migrations in version order.
func migrations() ([]migration, error) {
	names, err := fs.Glob(migrationFiles, "migrations/*.sql")
	if err != nil {
		return nil, err
	}
	var ms []migration
	for _, name := range names {
		base := strings.TrimSuffix(path.Base(name), ".sql")
		num, _, ok := strings.Cut(base, "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil || v < 1 {
			return nil, fmt.Errorf("migration file %s: name it NNNN_what.sql", name)
		}
		b, err := migrationFiles.ReadFile(name)
		if err != nil {
			return nil, err
		}
		ms = append(ms, migration{version: v, name: base, sql: string(b)})
	}
	slices.SortFunc(ms, func(a, b migration) int { return a.version - b.version })
	for i := 1; i < len(ms); i++ {
		if ms[i].version == ms[i-1].version {
			return nil, fmt.Errorf("migrations %s and %s have one version", ms[i-1].name, ms[i].name)
		}
	}
	return ms, nil
}

// migrate brings the journal's tables up to date. It runs in one
// transaction holding an advisory lock keyed by schema and prefix, so
// processes opening one journal at once queue instead of racing on CREATE,
// and a failed migration leaves nothing half done.
func migrate(ctx context.Context, pool *pgxpool.Pool, t tables) error {
	ms, err := migrations()
	if err != nil {
		return err
	}
	tx, err := pool.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(context.WithoutCancel(ctx))

	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, t.lockKey()); err != nil {
		return fmt.Errorf("take the migration lock: %w", err)
	}
	// CREATE … IF NOT EXISTS needs the CREATE privilege even when the
	// object exists: ask first, so that a role that may only read and
	// write the journal's tables can open an up-to-date journal.
	var exists bool
	if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)`, t.schemaName).Scan(&exists); err != nil {
		return fmt.Errorf("look up schema %s: %w", t.schema, err)
	}
	if !exists {
		if _, err := tx.Exec(ctx, `CREATE SCHEMA IF NOT EXISTS `+t.schema); err != nil {
			return fmt.Errorf("create schema %s: %w", t.schema, err)
		}
	}
	var hasTable bool
	if err := tx.QueryRow(ctx, `SELECT to_regclass($1) IS NOT NULL`, t.migrations).Scan(&hasTable); err != nil {
		return fmt.Errorf("look up %s: %w", t.migrations, err)
	}
	if !hasTable {
		_, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS `+t.migrations+` (
			version    integer     PRIMARY KEY,
			name       text        NOT NULL,
			applied_at timestamptz NOT NULL DEFAULT now()
		)`)
		if err != nil {
			return fmt.Errorf("create %s: %w", t.migrations, err)
		}
	}
	rows, err := tx.Query(ctx, `SELECT version FROM `+t.migrations)
	if err != nil {
		return err
	}
	applied, err := pgx.CollectRows(rows, pgx.RowTo[int32])
	if err != nil {
		return fmt.Errorf("read %s: %w", t.migrations, err)
	}
	for _, m := range ms {
		if slices.Contains(applied, int32(m.version)) {
			continue
		}
		// No arguments: pgx sends the file with the simple protocol, which
		// runs several statements.
		if _, err := tx.Exec(ctx, t.expand(m.sql)); err != nil {
			var pgErr *pgconn.PgError
			if errors.As(err, &pgErr) && pgErr.Code == "23505" {
				// Rows the new constraint refuses: say which, and where the fix is.
				return fmt.Errorf("migration %s: %w: %s; the comment at the top of migrations/%s.sql says what to do",
					m.name, err, pgErr.Detail, m.name)
			}
			return fmt.Errorf("migration %s: %w", m.name, err)
		}
		if _, err := tx.Exec(ctx, `INSERT INTO `+t.migrations+` (version, name) VALUES ($1, $2)`, m.version, m.name); err != nil {
			return fmt.Errorf("record migration %s: %w", m.name, err)
		}
	}
	return tx.Commit(ctx)
}

// tables names the journal's tables in one schema with one prefix.
type tables struct {
	schemaName, prefix                       string
	schema                                   string // quoted
	entries, checkpoints, epochs, migrations string // qualified and quoted
}

func newTables(schema, prefix string) tables {
	q := pgx.Identifier{schema}.Sanitize()
	name := func(table string) string { return pgx.Identifier{schema, prefix + table}.Sanitize() }
	return tables{
		schemaName:  schema,
		prefix:      prefix,
		schema:      q,
		entries:     name("entries"),
		checkpoints: name("checkpoints"),
		epochs:      name("epochs"),
		migrations:  name("schema_migrations"),
	}
}

// expand fills a migration's ${schema} and ${prefix}.
func (t tables) expand(sql string) string {
	return strings.NewReplacer("${schema}", t.schema, "${prefix}", t.prefix).Replace(sql)
}

// lockKey is the advisory lock of this journal's migrations.
func (t tables) lockKey() int64 {
	h := fnv.New64a()
	h.Write([]byte("postbox/journal/postgres\x00" + t.schemaName + "\x00" + t.prefix))
	return int64(h.Sum64())
}
