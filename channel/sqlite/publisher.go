package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/postbox-dev/postbox/channel"
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
		r := row{partition: channel.HomePartition(addr, partitions), msgID: msg.ID, address: addr, payload: msg.Payload, headers: h}
		if r.msgID == "" {
			r.msgID = channel.NewMessageID()
		}
		if r.payload == nil {
			r.payload = []byte{}
		}
		rows[i] = r
	}
	return rows, nil
}

// insertChunks are the row counts of the prepared INSERT statements, largest
// first: a multi-row statement costs far less per row than one execution
// per row, and a batch is split into as few of them as possible.
var insertChunks = [...]int{64, 8, 1}

// insertRows inserts rows with multi-row INSERT statements.
func insertRows(ctx context.Context, m *Mailbox, tx *sql.Tx, rows []row) error {
	now := time.Now().UnixNano()
	args := make([]any, 0, 6*min(len(rows), insertChunks[0]))
	for len(rows) > 0 {
		n := insertChunks[len(insertChunks)-1]
		for _, c := range insertChunks {
			if c <= len(rows) {
				n = c
				break
			}
		}
		args = args[:0]
		for _, r := range rows[:n] {
			var headers any
			if r.headers != nil {
				headers = r.headers
			}
			args = append(args, r.partition, r.msgID, r.address, r.payload, headers, now)
		}
		st, err := m.stmt(ctx, tx, insertSQL(n))
		if err != nil {
			return err
		}
		if _, err := st.ExecContext(ctx, args...); err != nil {
			return err
		}
		rows = rows[n:]
	}
	return nil
}

// insertSQL is an INSERT of n messages.
func insertSQL(n int) string {
	var b strings.Builder
	b.WriteString(`INSERT INTO mailbox_messages (partition, msg_id, address, payload, headers, created_at) VALUES `)
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString("(?, ?, ?, ?, ?, ?)")
	}
	return b.String()
}
