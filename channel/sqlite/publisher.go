package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/postbox-dev/postbox/channel"
	"github.com/postbox-dev/postbox/channel/internal/lease"
)

// Publisher appends messages to a Mailbox. It is safe for concurrent use.
type Publisher struct {
	m      *Mailbox
	closed atomic.Bool
}

var _ channel.Publisher = (*Publisher)(nil)

// Publish implements channel.Publisher in one transaction: all of msgs or
// none, durable on power loss with SyncFull. A message with an empty ID
// gets a random one; the caller's slice is not modified.
func (p *Publisher) Publish(ctx context.Context, msgs ...channel.Message) error {
	if p.closed.Load() {
		return fmt.Errorf("sqlite: publish: %w", channel.ErrClosed)
	}
	if len(msgs) == 0 {
		return nil
	}
	rows, err := prepareRows(msgs, p.m.partitions)
	if err != nil {
		return err
	}
	err = p.m.write(ctx, func(tx *sql.Tx) error { return insertRows(ctx, p.m, tx, rows) })
	if err != nil {
		return fmt.Errorf("sqlite: publish %d messages: %w", len(msgs), err)
	}
	return nil
}

// Close makes later Publish calls fail with channel.ErrClosed. It does not
// close the Mailbox, and it is idempotent.
func (p *Publisher) Close() error {
	p.closed.Store(true)
	return nil
}

// row is a message ready to insert.
type row struct {
	partition int32
	msgID     string
	address   string
	payload   []byte
	headers   []byte // JSON, nil when there are none
}

// prepareRows checks msgs and computes what insertRows stores, before any
// transaction starts: a bad message rejects the whole batch.
func prepareRows(msgs []channel.Message, partitions int) ([]row, error) {
	if err := channel.CheckPublish(msgs); err != nil {
		return nil, fmt.Errorf("sqlite: %w", err)
	}
	rows := make([]row, len(msgs))
	for i, msg := range msgs {
		addr := msg.Address.String()
		h, err := encodeHeaders(msg.Headers)
		if err != nil {
			return nil, fmt.Errorf("sqlite: publish message %d: encode headers: %w", i, err)
		}
		id, payload := lease.Stored(msg)
		rows[i] = row{partition: channel.HomePartition(addr, partitions), msgID: id, address: addr, payload: payload, headers: h}
	}
	return rows, nil
}

// insertChunk is the most rows one INSERT takes: a multi-row statement
// costs far less per row than one execution per row.
const insertChunk = 64

// insertRows inserts rows with multi-row INSERT statements.
func insertRows(ctx context.Context, m *Mailbox, tx *sql.Tx, rows []row) error {
	now := time.Now().UnixNano()
	args := make([]any, 0, 6*min(len(rows), insertChunk))
	for chunk := range slices.Chunk(rows, insertChunk) {
		args = args[:0]
		for _, r := range chunk {
			var headers any
			if r.headers != nil {
				headers = r.headers
			}
			args = append(args, r.partition, r.msgID, r.address, r.payload, headers, now)
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
