// Package sqlitedb opens SQLite files the way every postbox SQLite backend
// needs them: WAL, a busy timeout for several processes on one file, and
// write transactions that take the write lock up front.
package sqlitedb

import (
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

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
	q.Add("_pragma", fmt.Sprintf("busy_timeout(%d)", busyTimeout.Milliseconds()))
	q.Add("_pragma", "synchronous("+strings.ToUpper(string(sync))+")")
	q.Add("_pragma", "foreign_keys(OFF)")
	q.Set("_txlock", "immediate")
	db, err := sql.Open("sqlite", "file:"+path+"?"+q.Encode())
	if err != nil {
		return nil, fmt.Errorf("sqlite: open %s: %w", path, err)
	}
	if err := enableWAL(db); err != nil {
		db.Close()
		return nil, fmt.Errorf("sqlite: open %s: %w", path, err)
	}
	return db, nil
}

// enableWAL turns on WAL, which the file keeps from then on. Switching a
// new file takes its exclusive lock, and SQLite refuses that at once,
// without waiting on the busy timeout, when another process opening the
// same file holds a lock: so it is tried again for as long as the busy
// timeout lasts.
func enableWAL(db *sql.DB) error {
	deadline := time.Now().Add(busyTimeout)
	for {
		var mode string
		err := db.QueryRow("PRAGMA journal_mode=WAL").Scan(&mode)
		switch {
		case err == nil && mode == "wal":
			return nil
		case err == nil:
			return fmt.Errorf("journal mode is %q after asking for WAL", mode)
		case !isBusy(err) || time.Now().After(deadline):
			return err
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// busyTimeout is how long a statement waits for another process's lock.
const busyTimeout = 30 * time.Second

func isBusy(err error) bool {
	var e interface{ Code() int }
	return errors.As(err, &e) && e.Code()&0xff == 5 // SQLITE_BUSY and its extended codes
}
