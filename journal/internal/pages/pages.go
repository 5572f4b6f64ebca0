// Package pages is how every journal backend serves journal.Journal.Read:
// an actor's entries a page at a time, with no query open while the
// caller's function runs, so that it may use the journal itself, and a
// slow one holds no connection and pins no snapshot (SQLite's WAL).
package pages

import (
	"context"

	"github.com/postbox-dev/postbox/journal"
)

// Size is how many entries one page holds at most.
const Size = 256

// Fetch appends to page (empty, with room) up to Size entries of one actor
// from seq from on, in seq order. Its errors are returned as they are, so
// it wraps them as its backend reports read errors.
type Fetch func(ctx context.Context, from int64, page []journal.Entry) ([]journal.Entry, error)

// Read calls fn with each entry fetch returns from seq from on (at least
// 1), page by page, until a page is short; closed is asked before each
// page. It returns the last seq it passed to fn (0 if none), or the first
// error of closed (journal.ErrClosed), fetch or fn.
func Read(ctx context.Context, from int64, closed func() bool, fetch Fetch, fn func(journal.Entry) error) (int64, error) {
	from = max(from, 1)
	page := make([]journal.Entry, 0, 16)
	var last int64
	for {
		if closed() {
			return last, journal.ErrClosed
		}
		var err error
		if page, err = fetch(ctx, from, page[:0]); err != nil {
			return last, err
		}
		for _, e := range page {
			if err := fn(e); err != nil {
				return last, err
			}
			last = e.Seq
		}
		if len(page) < Size {
			return last, nil
		}
		from = last + 1
	}
}

// Rows is what database/sql's and pgx's query results share.
type Rows interface {
	Next() bool
	Scan(dest ...any) error
	Err() error
}

// Scan appends rows of (seq, kind, msg_id, data) to page as entries of
// actor. The caller closes rows.
func Scan(rows Rows, actor string, page []journal.Entry) ([]journal.Entry, error) {
	for rows.Next() {
		e := journal.Entry{Actor: actor}
		var kind int64
		if err := rows.Scan(&e.Seq, &kind, &e.MsgID, &e.Data); err != nil {
			return page, err
		}
		e.Kind = journal.Kind(kind)
		page = append(page, e)
	}
	return page, rows.Err()
}
