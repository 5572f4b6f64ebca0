package sqlite

import (
	"cmp"
	"context"
	"database/sql"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/postbox-dev/postbox/channel"
	"github.com/postbox-dev/postbox/channel/internal/lease"
)

// claim is the poll state of one claim. A poll marks the rows it takes
// with the claim's epoch, and only acks of that epoch delete them: a
// zombie cannot delete a message the next owner has taken.
type claim struct {
	c         *consumer
	s         *lease.Claim
	partition int32
	epoch     int64

	// Guarded by c.cycleMu: what the last poll of this claim saw.
	cursor  int64 // every row of the partition up to here is delivered by this claim or gone
	polled  bool  // polled at least once
	seenSeq int64 // the mailbox's highest offset then
	more    bool  // it stopped at its limit: more rows may be waiting
}

// Start wakes the poller for the new claim.
func (cl *claim) Start(context.Context) { lease.Kick(cl.c.wake) }

// Wake wakes the poller.
func (cl *claim) Wake() { lease.Kick(cl.c.wake) }

// Release deletes the acked messages and drops the lease in one
// transaction, so another consumer can take the partition at once.
func (cl *claim) Release(ctx context.Context, take func() []lease.Ref) (bool, error) {
	c := cl.c
	c.cycleMu.Lock() // a poll under way applies or restores its acks first
	acks := take()
	c.cycleMu.Unlock()
	return true, c.m.write(ctx, func(tx *sql.Tx) error {
		if err := c.deleteAcked(ctx, tx, cl, acks); err != nil {
			return err
		}
		// A lease taken over since is left alone.
		if _, err := tx.ExecContext(ctx, `UPDATE mailbox_leases SET owner = '', expires_at = 0
			WHERE partition = ? AND owner = ? AND epoch = ?`, cl.partition, c.opts.Owner, cl.epoch); err != nil {
			return fmt.Errorf("drop lease of partition %d: %w", cl.partition, err)
		}
		return nil
	})
}

// deleteAcked deletes the acked rows of cl, in one statement: the offsets
// go in as one JSON array.
func (c *consumer) deleteAcked(ctx context.Context, tx *sql.Tx, cl *claim, acks []lease.Ref) error {
	if len(acks) == 0 {
		return nil
	}
	st, err := c.m.stmt(ctx, tx, `DELETE FROM mailbox_messages WHERE id IN (SELECT value FROM json_each(?)) AND claim = ?`)
	if err != nil {
		return err
	}
	if _, err := st.ExecContext(ctx, jsonInts(acks), cl.epoch); err != nil {
		return fmt.Errorf("delete acked: %w", err)
	}
	return nil
}

// takeNext takes up to w.limit rows after w.from and marks them with the
// claim's epoch in the same statement.
func (c *consumer) takeNext(ctx context.Context, tx *sql.Tx, w *work) error {
	// OR FAIL: nothing here can violate a constraint, and without the
	// default ABORT, SQLite keeps no statement journal for the update.
	st, err := c.m.stmt(ctx, tx, `UPDATE OR FAIL mailbox_messages SET claim = ?1
		WHERE id IN (SELECT id FROM mailbox_messages WHERE partition = ?2 AND id > ?3 ORDER BY id LIMIT ?4)
		RETURNING id, msg_id, address, payload, headers, created_at`)
	if err != nil {
		return err
	}
	rows, err := st.QueryContext(ctx, w.cl.epoch, w.cl.partition, w.from, w.limit)
	if err != nil {
		return fmt.Errorf("take messages: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var (
			id, created      int64
			msgID, addr      string
			payload, headers []byte
		)
		if err := rows.Scan(&id, &msgID, &addr, &payload, &headers, &created); err != nil {
			return fmt.Errorf("read message: %w", err)
		}
		typ, aid, _ := strings.Cut(addr, "/")
		msg := channel.Message{ID: msgID, Address: channel.Address{Type: typ, ID: aid}, Payload: payload,
			Mailbox: c.m.name, Partition: w.cl.partition, Offset: id, PublishedAt: time.Unix(0, created)}
		if len(headers) > 0 {
			if msg.Headers, err = decodeHeaders(headers); err != nil {
				return fmt.Errorf("decode headers of message %s at offset %d: %w", msgID, id, err)
			}
		}
		w.delivered = append(w.delivered, msg)
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("take messages: %w", err)
	}
	// RETURNING does not promise an order.
	slices.SortFunc(w.delivered, func(a, b channel.Message) int { return cmp.Compare(a.Offset, b.Offset) })
	return nil
}

// jsonInts encodes the offsets of acks as a JSON array for json_each.
func jsonInts(acks []lease.Ref) string {
	b := make([]byte, 0, 2+len(acks)*8)
	b = append(b, '[')
	for i, a := range acks {
		if i > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendInt(b, a.Offset, 10)
	}
	return string(append(b, ']'))
}
