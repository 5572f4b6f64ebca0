package sqlite

import (
	"cmp"
	"context"
	"database/sql"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/postbox-dev/postbox/channel"
	"github.com/postbox-dev/postbox/channel/internal/lease"
)

// Claim is one partition owned by a Consumer under one lease epoch.
//
// Acks are buffered and applied by the consumer's next poll, at most
// PollInterval later, or by Release. Messages of a claim are fenced by
// its epoch: after the lease is lost, neither this claim nor its
// (possibly paused) process can delete a message the next owner has taken.
type Claim struct {
	c         *Consumer
	s         *lease.Slot
	partition int32
	epoch     int64
	releaseMu sync.Mutex // serializes Release calls

	// Guarded by c.mu.
	cursor   int64 // every row of the partition up to here is delivered by this claim or gone
	inflight map[int64]struct{}

	// What the last poll of this claim saw, so that an idle poller can tell
	// without a write transaction that polling would find nothing.
	polled  bool  // polled at least once
	seenSeq int64 // the mailbox's highest offset then
	more    bool  // it stopped at its limit: more rows may be waiting

	acks []int64
}

var _ channel.Claim = (*Claim)(nil)

func newClaim(c *Consumer, s *lease.Slot) *Claim {
	return &Claim{c: c, s: s, partition: s.Partition(), epoch: s.Epoch(), inflight: make(map[int64]struct{})}
}

// Partition returns the claimed partition.
func (cl *Claim) Partition() int32 { return cl.partition }

// Epoch returns the lease epoch: it grows every time the partition changes
// hands.
func (cl *Claim) Epoch() int64 { return cl.epoch }

// Messages delivers the partition's messages in offset order. It is closed
// when the claim is stopping (rebalance, Run ending, Release) or lost.
func (cl *Claim) Messages() <-chan channel.Message { return cl.s.Messages() }

// Lost is closed when the lease was lost: another consumer may own the
// partition, so stop working on it. Acks after that are ignored.
func (cl *Claim) Lost() <-chan struct{} { return cl.s.Lost() }

// Start wakes the poller for the new claim.
func (cl *Claim) Start(context.Context) { cl.c.kick() }

// Wake wakes the poller.
func (cl *Claim) Wake() { cl.c.kick() }

// active reports whether the claim hands out messages.
func (cl *Claim) active() bool {
	cl.s.Lock()
	defer cl.s.Unlock()
	return cl.s.ActiveLocked()
}

// holds reports whether the claim still holds its lease.
func (cl *Claim) holds() bool {
	cl.s.Lock()
	defer cl.s.Unlock()
	return cl.s.HoldsLocked()
}

// Ack acknowledges delivered messages of this claim. The acks are buffered
// and become durable with the next poll (within PollInterval) or Release;
// until then a crash redelivers them. Acks after Lost are ignored; acking a
// message that is not outstanding (already acked) does nothing.
func (cl *Claim) Ack(_ context.Context, msgs ...channel.Message) error {
	c := cl.c
	c.mu.Lock()
	defer c.mu.Unlock()
	wasFull := len(cl.inflight) >= c.opts.Buffer
	for _, m := range msgs {
		cl.s.Lock()
		ignore, err := cl.s.AckableLocked(m)
		cl.s.Unlock()
		if ignore {
			return err
		}
		if _, ok := cl.inflight[m.Offset]; ok {
			delete(cl.inflight, m.Offset)
			cl.acks = append(cl.acks, m.Offset)
		}
	}
	if wasFull || len(cl.acks) >= c.opts.BatchSize {
		c.kick()
	}
	return nil
}

// Release closes Messages, makes the buffered acks durable and drops the
// lease, so another consumer can take the partition at once.
// Messages delivered and not acked are redelivered to the next owner. After
// Lost, Release only closes the claim. Release is idempotent; when it fails
// (ctx ended, database error) it may be called again.
func (cl *Claim) Release(ctx context.Context) error {
	cl.releaseMu.Lock()
	defer cl.releaseMu.Unlock()
	c := cl.c

	c.cycleMu.Lock()
	if !cl.s.BeginRelease() {
		c.cycleMu.Unlock()
		return nil
	}
	c.mu.Lock()
	acks := cl.acks
	cl.acks = nil
	c.mu.Unlock()
	c.cycleMu.Unlock()

	err := c.m.write(ctx, func(tx *sql.Tx) error {
		st, err := prepareStmts(ctx, c.m, tx)
		if err != nil {
			return err
		}
		if err := st.ack(ctx, cl, acks); err != nil {
			return err
		}
		return dropLease(ctx, tx, cl.partition, c.opts.Owner, cl.epoch)
	})

	c.mu.Lock()
	defer c.mu.Unlock()
	if err != nil {
		cl.acks = append(acks, cl.acks...)
	}
	if cl.s.EndRelease(err, true) {
		cl.inflight, cl.acks = nil, nil
	}
	if err != nil {
		return fmt.Errorf("sqlite: release partition %d: %w", cl.partition, err)
	}
	return nil
}

// pollStmts are the statements of a poll, bound to its transaction.
type pollStmts struct {
	del, take *sql.Stmt
}

func prepareStmts(ctx context.Context, m *Mailbox, tx *sql.Tx) (*pollStmts, error) {
	var s pollStmts
	var err error
	// Offsets go in as one JSON array: one statement per batch instead of
	// one per message. Only rows this claim took are deleted: a zombie's
	// acks delete nothing that the next owner has taken since.
	if s.del, err = m.stmt(ctx, tx, `DELETE FROM mailbox_messages
		WHERE id IN (SELECT value FROM json_each(?)) AND claim = ?`); err != nil {
		return nil, fmt.Errorf("prepare poll: %w", err)
	}
	// OR FAIL: nothing here can violate a constraint, and without the
	// default ABORT, SQLite keeps no statement journal for the update.
	if s.take, err = m.stmt(ctx, tx, `UPDATE OR FAIL mailbox_messages SET claim = ?1
		WHERE id IN (SELECT id FROM mailbox_messages WHERE partition = ?2 AND id > ?3 ORDER BY id LIMIT ?4)
		RETURNING id, msg_id, address, payload, headers, created_at`); err != nil {
		return nil, fmt.Errorf("prepare poll: %w", err)
	}
	return &s, nil
}

// ack deletes the acked rows of cl.
func (s *pollStmts) ack(ctx context.Context, cl *Claim, acks []int64) error {
	if len(acks) == 0 {
		return nil
	}
	if _, err := s.del.ExecContext(ctx, jsonInts(acks), cl.epoch); err != nil {
		return fmt.Errorf("delete acked: %w", err)
	}
	return nil
}

// takeNext takes up to w.limit rows after w.from and marks them with the
// claim's epoch in the same statement, so that only its acks delete them.
func (s *pollStmts) takeNext(ctx context.Context, w *work, mailbox string) error {
	rows, err := s.take.QueryContext(ctx, w.cl.epoch, w.cl.partition, w.from, w.limit)
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
		msg, err := newMessage(mailbox, w.cl.partition, id, msgID, addr, payload, headers, created)
		if err != nil {
			return err
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

// newMessage builds a delivered message from its row.
func newMessage(mailbox string, partition int32, id int64, msgID, addr string, payload, headers []byte, created int64) (channel.Message, error) {
	typ, aid, _ := strings.Cut(addr, "/")
	msg := channel.Message{
		ID:          msgID,
		Address:     channel.Address{Type: typ, ID: aid},
		Payload:     payload,
		Mailbox:     mailbox,
		Partition:   partition,
		Offset:      id,
		PublishedAt: time.Unix(0, created),
	}
	if len(headers) > 0 {
		h, err := decodeHeaders(headers)
		if err != nil {
			return msg, fmt.Errorf("decode headers of message %s at offset %d: %w", msgID, id, err)
		}
		msg.Headers = h
	}
	return msg, nil
}

// jsonInts encodes ns as a JSON array for json_each.
func jsonInts(ns []int64) string {
	b := make([]byte, 0, 2+len(ns)*8)
	b = append(b, '[')
	for i, n := range ns {
		if i > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendInt(b, n, 10)
	}
	return string(append(b, ']'))
}
