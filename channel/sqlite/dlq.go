package sqlite

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"fmt"

	"github.com/postbox-dev/postbox/channel"
	"github.com/postbox-dev/postbox/channel/internal/lease"
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
	env, err := dlq.ForPut(env)
	if err != nil {
		return fmt.Errorf("sqlite: %w", err)
	}
	if env.ID == "" {
		var b [16]byte
		_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on supported platforms
		env.ID = "dl-" + hex.EncodeToString(b[:])
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

// List implements dlq.Store.List.
func (d *DeadLetters) List(ctx context.Context) ([]dlq.Envelope, error) {
	if d.m.isClosed() {
		return nil, fmt.Errorf("sqlite: list dead letters: %w", channel.ErrClosed)
	}
	envs, err := queryEnvelopes(ctx, d.m.db, `ORDER BY dead_lettered_at, seq`)
	if err != nil {
		return nil, fmt.Errorf("sqlite: list dead letters: %w", err)
	}
	return envs, nil
}

// Get implements dlq.Store.Get.
func (d *DeadLetters) Get(ctx context.Context, id string) (dlq.Envelope, error) {
	if d.m.isClosed() {
		return dlq.Envelope{}, fmt.Errorf("sqlite: get dead letter %s: %w", id, channel.ErrClosed)
	}
	env, ok, err := getEnvelope(ctx, d.m.db, id)
	switch {
	case err != nil:
		return dlq.Envelope{}, fmt.Errorf("sqlite: get dead letter %s: %w", id, err)
	case !ok:
		return dlq.Envelope{}, fmt.Errorf("sqlite: %w", dlq.NotFoundForGet(id))
	}
	return env, nil
}

// querier is what reads dead letters: the database or a transaction.
type querier interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

// queryEnvelopes decodes the dead letters the clause (ORDER BY, WHERE)
// selects.
func queryEnvelopes(ctx context.Context, q querier, clause string, args ...any) ([]dlq.Envelope, error) {
	rows, err := q.QueryContext(ctx, `SELECT id, envelope FROM mailbox_dead_letters `+clause, args...)
	if err != nil {
		return nil, err
	}
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

// getEnvelope reads the dead letter id, false if there is none.
func getEnvelope(ctx context.Context, q querier, id string) (dlq.Envelope, bool, error) {
	envs, err := queryEnvelopes(ctx, q, `WHERE id = ?`, id)
	if err != nil || len(envs) == 0 {
		return dlq.Envelope{}, false, err
	}
	return envs[0], true, nil
}

// Redrive implements dlq.Store.Redrive in one transaction: either all of
// the dead letters are redriven or none.
func (d *DeadLetters) Redrive(ctx context.Context, ids ...string) (int, error) {
	var n int
	err := d.m.write(ctx, func(tx *sql.Tx) error {
		envs, err := dlq.Pick(ids, true,
			func() ([]dlq.Envelope, error) { return queryEnvelopes(ctx, tx, `ORDER BY seq`) },
			func(id string) (dlq.Envelope, bool, error) { return getEnvelope(ctx, tx, id) })
		if err != nil {
			return err
		}
		recs, err := dlq.RedriveMessages(envs, func(env dlq.Envelope) dlq.Envelope { return env },
			func(msgs []channel.Message) ([]lease.Record, error) {
				return lease.Records(Backend, d.m.partitions, msgs)
			})
		if err != nil {
			return err
		}
		if err := d.m.insert(ctx, tx, recs); err != nil {
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

// Purge implements dlq.Store.Purge.
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
