package testenv

import (
	"database/sql"
	"testing"

	"github.com/postbox-dev/postbox/internal/sqlitedb"
)

// SQLite opens the SQLite file at path directly, closed when t ends: for
// a test to look behind a backend's API.
func SQLite(t testing.TB, path string) *sql.DB {
	t.Helper()
	db, err := sqlitedb.Open(path, sqlitedb.Options{})
	if err != nil {
		t.Fatalf("open %s: %v", path, err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}
