package sqlite

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/postbox-dev/postbox/channel"
	"github.com/postbox-dev/postbox/dlq"
)

// DeadLetters is a mailbox's dead-letter queue, the table
// mailbox_dead_letters of its file. Each envelope is stored whole, in the
// byte-exact layout of dlq.Envelope.MarshalBinary, next to indexed columns
// for lookups and ordering. Rows written as JSON by earlier versions are
// still read, with what JSON already replaced.
type DeadLetters struct {
	m *Mailbox
}

var _ dlq.Store = (*DeadLetters)(nil)

// Put stores env, durably once it returns. A second Put with the same
// MessageID replaces the envelope and keeps the first one's ID. An empty ID
// gets a random one, and a zero DeadLetteredAt the current time.
func (d *DeadLetters) Put(ctx context.Context, env dlq.Envelope) error {
	if env.MessageID == "" {
		return errors.New("sqlite: put dead letter: empty MessageID: set it to the ID of the message being dead-lettered")
	}
	if env.ID == "" {
		var b [16]byte
		_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on supported platforms
		env.ID = "dl-" + hex.EncodeToString(b[:])
	}
	if env.DeadLetteredAt.IsZero() {
		env.DeadLetteredAt = time.Now()
	}
	doc, err := env.MarshalBinary() // not JSON: it would replace invalid UTF-8
	if err != nil {
		return fmt.Errorf("sqlite: put dead letter of message %s: encode: %w", env.MessageID, err)
	}
	err = d.m.write(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO mailbox_dead_letters
			(id, message_id, address, source_partition, source_offset, dead_lettered_at, envelope)
			VALUES (?, ?, ?, ?, ?, ?, ?)
			ON CONFLICT (message_id) DO UPDATE SET
				address = excluded.address,
				source_partition = excluded.source_partition,
				source_offset = excluded.source_offset,
				dead_lettered_at = excluded.dead_lettered_at,
				envelope = excluded.envelope`,
			env.ID, env.MessageID, env.Address, env.Source.Partition, env.Source.Offset,
			env.DeadLetteredAt.UnixNano(), doc)
		return err
	})
	if err != nil {
		return fmt.Errorf("sqlite: put dead letter of message %s: %w", env.MessageID, err)
	}
	return nil
}

// List returns every dead letter, oldest first.
func (d *DeadLetters) List(ctx context.Context) ([]dlq.Envelope, error) {
	if d.m.isClosed() {
		return nil, fmt.Errorf("sqlite: list dead letters: %w", channel.ErrClosed)
	}
	rows, err := d.m.db.QueryContext(ctx, `SELECT id, envelope FROM mailbox_dead_letters ORDER BY dead_lettered_at, seq`)
	if err != nil {
		return nil, fmt.Errorf("sqlite: list dead letters: %w", err)
	}
	envs, err := scanEnvelopes(rows)
	if err != nil {
		return nil, fmt.Errorf("sqlite: list dead letters: %w", err)
	}
	return envs, nil
}

// Get returns the dead letter with ID id, or an error matching
// dlq.ErrNotFound.
func (d *DeadLetters) Get(ctx context.Context, id string) (dlq.Envelope, error) {
	if d.m.isClosed() {
		return dlq.Envelope{}, fmt.Errorf("sqlite: get dead letter %s: %w", id, channel.ErrClosed)
	}
	rows, err := d.m.db.QueryContext(ctx, `SELECT id, envelope FROM mailbox_dead_letters WHERE id = ?`, id)
	if err != nil {
		return dlq.Envelope{}, fmt.Errorf("sqlite: get dead letter %s: %w", id, err)
	}
	envs, err := scanEnvelopes(rows)
	if err != nil {
		return dlq.Envelope{}, fmt.Errorf("sqlite: get dead letter %s: %w", id, err)
	}
	if len(envs) == 0 {
		return dlq.Envelope{}, fmt.Errorf("sqlite: get dead letter %s: %w (list them to see the IDs)", id, dlq.ErrNotFound)
	}
	return envs[0], nil
}

// scanEnvelopes decodes rows of (id, envelope) and closes rows.
func scanEnvelopes(rows *sql.Rows) ([]dlq.Envelope, error) {
	defer rows.Close()
	var envs []dlq.Envelope
	for rows.Next() {
		var id string
		var doc []byte
		if err := rows.Scan(&id, &doc); err != nil {
			return nil, err
		}
		var env dlq.Envelope
		if err := env.UnmarshalBinary(doc); err != nil {
			return nil, fmt.Errorf("dead letter %s: %w", id, err)
		}
		env.ID = id // a replacing Put keeps the first ID
		envs = append(envs, env)
	}
	return envs, rows.Err()
}

// Redrive moves the given dead letters, or all of them when ids is empty,
// back into the mailbox in one transaction: either all are redriven or none.
// They are re-published in dlq.CompareRedrive's order, so one actor's
// messages keep their original order, each under the ID
// dlq.RedriveID(original) with the original ID in header
// dlq.HeaderRedriveOf, to exactly the address bytes it holds. An unknown
// ID fails the whole call with an error matching dlq.ErrNotFound, and a
// dead letter that cannot be redriven as it is (see dlq.RedriveMessage)
// with an error naming it and matching channel.ErrBadAddress or
// channel.ErrBadMessageID; it stays queued.
func (d *DeadLetters) Redrive(ctx context.Context, ids ...string) (int, error) {
	var n int
	err := d.m.write(ctx, func(tx *sql.Tx) error {
		envs, err := d.selectTx(ctx, tx, ids)
		if err != nil {
			return err
		}
		slices.SortStableFunc(envs, func(a, b dlq.Envelope) int { return dlq.CompareRedrive(&a, &b) })
		rows := make([]row, 0, len(envs))
		for _, env := range envs {
			// One at a time, so that a refusal names its dead letter.
			r, err := redriveRow(env, d.m.partitions)
			if err != nil {
				return err
			}
			rows = append(rows, r)
		}
		if err := insertRows(ctx, d.m, tx, rows); err != nil {
			return fmt.Errorf("re-publish: %w", err)
		}
		n, err = deleteDeadLetters(ctx, tx, envIDs(envs))
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("sqlite: redrive dead letters: %w", err)
	}
	return n, nil
}

// redriveRow is the mailbox row of the redriven copy of env, prepared as
// Publish prepares one.
func redriveRow(env dlq.Envelope, partitions int) (row, error) {
	m, err := dlq.RedriveMessage(env)
	if err != nil {
		return row{}, err
	}
	out, err := prepareRows([]channel.Message{m}, partitions)
	if err != nil {
		return row{}, dlq.CannotRedrive(env, err)
	}
	return out[0], nil
}

// Purge deletes the given dead letters, or all of them when ids is empty,
// and returns how many it deleted. Unknown IDs are skipped.
func (d *DeadLetters) Purge(ctx context.Context, ids ...string) (int, error) {
	var n int
	err := d.m.write(ctx, func(tx *sql.Tx) error {
		if len(ids) == 0 {
			res, err := tx.ExecContext(ctx, `DELETE FROM mailbox_dead_letters`)
			if err != nil {
				return err
			}
			k, err := res.RowsAffected()
			n = int(k)
			return err
		}
		var err error
		n, err = deleteDeadLetters(ctx, tx, ids)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("sqlite: purge dead letters: %w", err)
	}
	return n, nil
}

// selectTx loads the dead letters with the given IDs, or all when ids is
// empty. Every given ID must exist.
func (d *DeadLetters) selectTx(ctx context.Context, tx *sql.Tx, ids []string) ([]dlq.Envelope, error) {
	if len(ids) == 0 {
		rows, err := tx.QueryContext(ctx, `SELECT id, envelope FROM mailbox_dead_letters ORDER BY seq`)
		if err != nil {
			return nil, err
		}
		return scanEnvelopes(rows)
	}
	stmt, err := tx.PrepareContext(ctx, `SELECT id, envelope FROM mailbox_dead_letters WHERE id = ?`)
	if err != nil {
		return nil, err
	}
	defer stmt.Close()
	seen := make(map[string]bool, len(ids))
	var envs []dlq.Envelope
	for _, id := range ids {
		if seen[id] {
			continue
		}
		seen[id] = true
		rows, err := stmt.QueryContext(ctx, id)
		if err != nil {
			return nil, err
		}
		got, err := scanEnvelopes(rows)
		if err != nil {
			return nil, err
		}
		if len(got) == 0 {
			return nil, dlq.NotFoundForRedrive(id)
		}
		envs = append(envs, got...)
	}
	return envs, nil
}

func deleteDeadLetters(ctx context.Context, tx *sql.Tx, ids []string) (int, error) {
	stmt, err := tx.PrepareContext(ctx, `DELETE FROM mailbox_dead_letters WHERE id = ?`)
	if err != nil {
		return 0, err
	}
	defer stmt.Close()
	n := 0
	for _, id := range ids {
		res, err := stmt.ExecContext(ctx, id)
		if err != nil {
			return n, fmt.Errorf("delete dead letter %s: %w", id, err)
		}
		k, err := res.RowsAffected()
		if err != nil {
			return n, err
		}
		n += int(k)
	}
	return n, nil
}

func envIDs(envs []dlq.Envelope) []string {
	ids := make([]string, len(envs))
	for i, env := range envs {
		ids[i] = env.ID
	}
	return ids
}
