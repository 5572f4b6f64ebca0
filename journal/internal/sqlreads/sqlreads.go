// Package sqlreads is how the journals on SQL stores (SQLite, PostgreSQL)
// answer the reads of journal.Journal: one statement each, of the same
// arguments and columns in each dialect, scanned the same way, with the
// same errors.
package sqlreads

import (
	"context"
	"errors"
	"fmt"

	"github.com/postbox-dev/postbox/journal"
	"github.com/postbox-dev/postbox/journal/internal/pages"
)

// Query names a read. A backend has a statement for each, taking the
// arguments and returning the columns listed.
type Query int

const (
	Read           Query = iota // actor, from seq, limit → seq, kind, msg_id, data, by seq
	LastSeq                     // actor → the highest seq; no row when none
	Outcome                     // actor, msg ID → seq, kind, data of its outcome
	LoadCheckpoint              // actor, at or before seq → seq, state of the newest
	Horizon                     // partition → horizon, NULL for none
	Epoch                       // partition → epoch
	Queries                     // how many there are
)

// DB runs a backend's statements.
type DB interface {
	// QueryRow runs q with args and scans its first row into dest; with
	// no row it returns the DB's no-rows error.
	QueryRow(ctx context.Context, q Query, args []any, dest ...any) error
	// Query runs q with args and passes its rows to scan, closing them
	// after.
	Query(ctx context.Context, q Query, args []any, scan func(pages.Rows) error) error
}

// Reads serves the reads of a journal.Journal from a DB. Backends embed
// it; a backend that does more on a read defines that method itself.
type Reads struct {
	name   string // starts every error
	db     DB
	noRows error
	closed func() bool
}

// New returns the reads of the journal named name ("journal/sqlite"),
// whose DB returns noRows for a query without a row and which is closed
// when closed says so.
func New(name string, db DB, noRows error, closed func() bool) Reads {
	return Reads{name: name, db: db, noRows: noRows, closed: closed}
}

// Failed turns an error of a call that raced with Close into
// journal.ErrClosed.
func (r Reads) Failed(err error) error {
	if r.closed() {
		return journal.ErrClosed
	}
	return err
}

// row runs a lookup of at most one row into dest; found is false when it
// matched none. what names the lookup in an error.
func (r Reads) row(ctx context.Context, what string, q Query, args []any, dest ...any) (found bool, err error) {
	if r.closed() {
		return false, journal.ErrClosed
	}
	err = r.db.QueryRow(ctx, q, args, dest...)
	if errors.Is(err, r.noRows) {
		return false, nil
	}
	if err != nil {
		return false, r.Failed(fmt.Errorf("%s: %s: %w", r.name, what, err))
	}
	return true, nil
}

// Read implements journal.Journal, a page at a time (see package pages).
// Data of a compacted outcome is nil.
func (r Reads) Read(ctx context.Context, actor string, from int64, fn func(journal.Entry) error) error {
	_, err := r.ReadLast(ctx, actor, from, fn)
	return err
}

// ReadLast is Read that also returns the last seq it passed to fn.
func (r Reads) ReadLast(ctx context.Context, actor string, from int64, fn func(journal.Entry) error) (last int64, err error) {
	return pages.Read(ctx, from, r.closed, func(ctx context.Context, from int64, page []journal.Entry) ([]journal.Entry, error) {
		err := r.db.Query(ctx, Read, []any{actor, from, pages.Size}, func(rows pages.Rows) error {
			var err error
			page, err = pages.Scan(rows, actor, page)
			return err
		})
		if err != nil {
			return page, r.Failed(fmt.Errorf("%s: read %s from %d: %w", r.name, actor, from, err))
		}
		return page, nil
	}, fn)
}

// LastSeq implements journal.Journal.
func (r Reads) LastSeq(ctx context.Context, actor string) (int64, error) {
	var seq int64
	_, err := r.row(ctx, "last seq of "+actor, LastSeq, []any{actor}, &seq)
	return seq, err
}

// Outcome implements journal.Journal. Data of a compacted outcome is nil.
func (r Reads) Outcome(ctx context.Context, actor, msgID string) (journal.Entry, bool, error) {
	e := journal.Entry{Actor: actor, MsgID: msgID}
	var kind int64
	ok, err := r.row(ctx, fmt.Sprintf("outcome of %s message %q", actor, msgID), Outcome, []any{actor, msgID}, &e.Seq, &kind, &e.Data)
	if !ok {
		return journal.Entry{}, false, err
	}
	e.Kind = journal.Kind(kind)
	return e, true, nil
}

// LoadCheckpoint implements journal.Journal.
func (r Reads) LoadCheckpoint(ctx context.Context, actor string, atOrBefore int64) (journal.Checkpoint, bool, error) {
	cp := journal.Checkpoint{Actor: actor}
	ok, err := r.row(ctx, "checkpoint of "+actor, LoadCheckpoint, []any{actor, atOrBefore}, &cp.Seq, &cp.State)
	if !ok {
		return journal.Checkpoint{}, false, err
	}
	return cp, true, nil
}

// Horizon implements journal.Journal.
func (r Reads) Horizon(ctx context.Context, partition string) (int64, bool, error) {
	var h *int64
	if _, err := r.row(ctx, fmt.Sprintf("horizon of %q", partition), Horizon, []any{partition}, &h); err != nil || h == nil {
		return 0, false, err
	}
	return *h, true, nil
}

// Epoch implements journal.Journal.
func (r Reads) Epoch(ctx context.Context, partition string) (int64, error) {
	var e int64
	_, err := r.row(ctx, fmt.Sprintf("epoch of %q", partition), Epoch, []any{partition}, &e)
	return e, err
}
