package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/postbox-dev/postbox/channel/internal/lease"
)

// publish stores the records of one Publish in one transaction.
func (m *Mailbox) publish(ctx context.Context, recs []lease.Record) error {
	return m.write(ctx, func(tx *sql.Tx) error { return m.insert(ctx, tx, recs) })
}

// insertChunk is the most rows one INSERT takes: a multi-row statement
// costs far less per row than one execution per row.
const insertChunk = 64

// insert inserts recs with multi-row INSERT statements.
func (m *Mailbox) insert(ctx context.Context, tx *sql.Tx, recs []lease.Record) error {
	now := time.Now().UnixNano()
	args := make([]any, 0, 6*min(len(recs), insertChunk))
	for chunk := range slices.Chunk(recs, insertChunk) {
		args = args[:0]
		for _, r := range chunk {
			var headers any
			if h, err := encodeHeaders(r.Headers); err != nil {
				return fmt.Errorf("encode headers of message %s: %w", r.ID, err)
			} else if h != nil {
				headers = h
			}
			args = append(args, r.Partition, r.ID, r.Address, r.Payload, headers, now)
		}
		st, err := m.stmt(ctx, tx, `INSERT INTO mailbox_messages (partition, msg_id, address, payload, headers, created_at) VALUES `+
			strings.TrimSuffix(strings.Repeat("(?, ?, ?, ?, ?, ?),", len(chunk)), ","))
		if err != nil {
			return err
		}
		if _, err := st.ExecContext(ctx, args...); err != nil {
			return err
		}
	}
	return nil
}
