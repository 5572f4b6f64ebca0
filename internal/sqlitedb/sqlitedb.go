// Package sqlitedb opens SQLite files the way every postbox SQLite backend
// needs them: WAL, a busy timeout for several processes on one file, and
// write transactions that take the write lock up front.
package sqlitedb

import (
	"database/sql"
	"fmt"
	"net/url"
	"strings"

	_ "modernc.org/sqlite" // registers the "sqlite" driver
)

// Synchronous is SQLite's synchronous setting for WAL mode.
type Synchronous string

const (
	// SyncFull fsyncs the WAL on every commit: a committed transaction
	// survives power loss. The default.
	SyncFull Synchronous = "FULL"
	// SyncNormal fsyncs only at checkpoints: commits survive a process crash
	// but the last ones may be lost on power loss.
	SyncNormal Synchronous = "NORMAL"
)

// Options tune Open. The zero value is SyncFull.
type Options struct {
	Synchronous Synchronous
}

// Open opens (creating if needed) the SQLite database at path. Write
// transactions begin IMMEDIATE, so concurrent writers queue on the busy
// timeout instead of failing on lock upgrade.
func Open(path string, opts Options) (*sql.DB, error) {
	sync := opts.Synchronous
	if sync == "" {
		sync = SyncFull
	}
	switch strings.ToUpper(string(sync)) {
	case string(SyncFull), string(SyncNormal):
	default:
		return nil, fmt.Errorf("sqlite: synchronous %q: want FULL or NORMAL", sync)
	}
	q := url.Values{}
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "synchronous("+strings.ToUpper(string(sync))+")")
	q.Add("_pragma", "busy_timeout(30000)")
	q.Add("_pragma", "foreign_keys(OFF)")
	q.Set("_txlock", "immediate")
	db, err := sql.Open("sqlite", "file:"+path+"?"+q.Encode())
	if err != nil {
		return nil, fmt.Errorf("sqlite: open %s: %w", path, err)
	}
	if err := db.Ping(); err != nil {
		db.Close()
		return nil, fmt.Errorf("sqlite: open %s: %w", path, err)
	}
	return db, nil
}
