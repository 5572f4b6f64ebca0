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

// nack is a buffered Nack: the message at offset becomes visible again at
// visibleAt.
type nack struct {
	offset    int64
	visibleAt int64
}

// Claim is one partition owned by a Consumer under one lease epoch.
//
// Acks and nacks are buffered and applied by the consumer's next poll, at
// most PollInterval later, or by Release. Messages of a claim are fenced by
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
	retryAt int64 // earliest visible_at of a held-back row, 0 if none

	acks  []int64
	nacks []nack
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

// settle is the check of Ack and Nack; see lease.Slot.SettleLocked.
func (cl *Claim) settle(verb string, msg channel.Message) (bool, error) {
	cl.s.Lock()
	defer cl.s.Unlock()
	return cl.s.SettleLocked(verb, msg)
}

// Ack acknowledges delivered messages of this claim. The acks are buffered
// and become durable with the next poll (within PollInterval) or Release;
// until then a crash redelivers them. Acks after Lost are ignored; acking a
// message that is not outstanding (already acked or nacked) does nothing.
func (cl *Claim) Ack(_ context.Context, msgs ...channel.Message) error {
	c := cl.c
	c.mu.Lock()
	defer c.mu.Unlock()
	wasFull := len(cl.inflight) >= c.opts.Buffer
	for _, m := range msgs {
		if ignore, err := cl.settle("ack", m); ignore {
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

// Nack hands msg back: it is delivered again, with Deliveries one higher,
// once delay has passed, and the partition's later messages of the same
// address that have not been delivered yet wait for it. Messages of that
// address already delivered are not recalled. The nack is buffered like an
// ack and applied by the next poll.
func (cl *Claim) Nack(_ context.Context, msg channel.Message, delay time.Duration) error {
	c := cl.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if ignore, err := cl.settle("nack", msg); ignore {
		return err
	}
	if _, ok := cl.inflight[msg.Offset]; !ok {
		return nil
	}
	delete(cl.inflight, msg.Offset)
	cl.nacks = append(cl.nacks, nack{offset: msg.Offset, visibleAt: time.Now().Add(max(delay, 0)).UnixNano()})
	c.kick()
	return nil
}

// Release closes Messages, makes the buffered acks and nacks durable and
// drops the lease, so another consumer can take the partition at once.
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
	acks, nacks := cl.acks, cl.nacks
	cl.acks, cl.nacks = nil, nil
	c.mu.Unlock()
	c.cycleMu.Unlock()

	err := c.m.write(ctx, func(tx *sql.Tx) error {
		st, err := prepareStmts(ctx, c.m, tx)
		if err != nil {
			return err
		}
		if err := st.apply(ctx, &work{cl: cl, acks: acks, nacks: nacks}); err != nil {
			return err
		}
		return dropLease(ctx, tx, cl.partition, c.opts.Owner, cl.epoch)
	})

	c.mu.Lock()
	defer c.mu.Unlock()
	if err != nil {
		cl.acks = append(acks, cl.acks...)
		cl.nacks = append(nacks, cl.nacks...)
	}
	if cl.s.EndRelease(err, true) {
		cl.inflight, cl.acks, cl.nacks = nil, nil, nil
	}
	if err != nil {
		return fmt.Errorf("sqlite: release partition %d: %w", cl.partition, err)
	}
	return nil
}

// pollStmts are the statements of a poll, bound to its transaction.
type pollStmts struct {
	del, unclaim, delayed, sel, mark, takeNext *sql.Stmt
}

func prepareStmts(ctx context.Context, m *Mailbox, tx *sql.Tx) (*pollStmts, error) {
	var s pollStmts
	var err error
	prep := func(dst **sql.Stmt, q string) {
		if err == nil {
			*dst, err = m.stmt(ctx, tx, q)
		}
	}
	// Acks and nacks only touch rows this claim took: a zombie's acks
	// delete nothing that the next owner has taken since.
	// Offsets go in as one JSON array: one statement per batch instead of
	// one per message.
	prep(&s.del, `DELETE FROM mailbox_messages WHERE id IN (SELECT value FROM json_each(?)) AND claim = ?`)
	prep(&s.unclaim, `UPDATE mailbox_messages SET visible_at = ?, claim = NULL WHERE id = ? AND claim = ?`)
	// Through the partial index of nacked rows: cheap however long the
	// partition.
	prep(&s.delayed, `SELECT EXISTS (SELECT 1 FROM mailbox_messages
		WHERE partition = ? AND visible_at > 0 AND visible_at > ?)`)
	prep(&s.sel, `SELECT id, msg_id, address, payload, headers, deliveries, visible_at, created_at
		FROM mailbox_messages WHERE partition = ? AND id > ? AND claim IS NOT ? ORDER BY id`)
	// OR FAIL: nothing here can violate a constraint, and without the
	// default ABORT, SQLite keeps no statement journal for the update.
	prep(&s.mark, `UPDATE OR FAIL mailbox_messages SET claim = ?, deliveries = deliveries + 1
		WHERE id IN (SELECT value FROM json_each(?))`)
	prep(&s.takeNext, `UPDATE OR FAIL mailbox_messages SET claim = ?1, deliveries = deliveries + 1
		WHERE id IN (SELECT id FROM mailbox_messages
			WHERE partition = ?2 AND id > ?3 AND claim IS NOT ?1 ORDER BY id LIMIT ?4)
		RETURNING id, msg_id, address, payload, headers, deliveries, created_at`)
	if err != nil {
		return nil, fmt.Errorf("prepare poll: %w", err)
	}
	return &s, nil
}

// apply makes w's nacks and acks durable.
func (s *pollStmts) apply(ctx context.Context, w *work) error {
	for _, n := range w.nacks {
		if _, err := s.unclaim.ExecContext(ctx, n.visibleAt, n.offset, w.cl.epoch); err != nil {
			return fmt.Errorf("nack: %w", err)
		}
	}
	if len(w.acks) > 0 {
		if _, err := s.del.ExecContext(ctx, jsonInts(w.acks), w.cl.epoch); err != nil {
			return fmt.Errorf("delete acked: %w", err)
		}
	}
	return nil
}

// take selects up to w.limit deliverable messages after w.from and records
// their delivery. A message whose visible_at is in the future (nacked with a
// delay) holds back every later message of its address; other addresses
// pass it. w.cursor advances over the delivered prefix only, so held-back
// rows are looked at again by the next poll. When the partition holds no
// such message, which is the common case, one statement does it all.
func (s *pollStmts) take(ctx context.Context, w *work, now int64, mailbox string) error {
	var delayed bool
	if err := s.delayed.QueryRowContext(ctx, w.cl.partition, now).Scan(&delayed); err != nil {
		return fmt.Errorf("look for delayed messages: %w", err)
	}
	if !delayed {
		return s.takeAll(ctx, w, mailbox)
	}
	rows, err := s.sel.QueryContext(ctx, w.cl.partition, w.from, w.cl.epoch)
	if err != nil {
		return fmt.Errorf("select messages: %w", err)
	}
	defer rows.Close()
	var blocked map[string]struct{}
	advance := true
	for rows.Next() {
		var (
			id, deliveries, visibleAt, created int64
			msgID, addr                        string
			payload, headers                   []byte
		)
		if err := rows.Scan(&id, &msgID, &addr, &payload, &headers, &deliveries, &visibleAt, &created); err != nil {
			return fmt.Errorf("read message: %w", err)
		}
		if _, held := blocked[addr]; held || visibleAt > now {
			if blocked == nil {
				blocked = make(map[string]struct{})
			}
			blocked[addr] = struct{}{}
			advance = false
			if visibleAt > now && (w.retryAt == 0 || visibleAt < w.retryAt) {
				w.retryAt = visibleAt
			}
			continue
		}
		msg, err := newMessage(mailbox, w.cl.partition, id, msgID, addr, payload, headers, deliveries+1, created)
		if err != nil {
			return err
		}
		w.delivered = append(w.delivered, msg)
		if advance {
			w.cursor = id
		}
		if len(w.delivered) == w.limit {
			break
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("select messages: %w", err)
	}
	rows.Close()
	if len(w.delivered) == 0 {
		return nil
	}
	offsets := make([]int64, len(w.delivered))
	for i, msg := range w.delivered {
		offsets[i] = msg.Offset
	}
	if _, err := s.mark.ExecContext(ctx, w.cl.epoch, jsonInts(offsets)); err != nil {
		return fmt.Errorf("record delivery: %w", err)
	}
	return nil
}

// takeAll takes the next rows in one statement, which selects them and
// records their delivery at once.
func (s *pollStmts) takeAll(ctx context.Context, w *work, mailbox string) error {
	rows, err := s.takeNext.QueryContext(ctx, w.cl.epoch, w.cl.partition, w.from, w.limit)
	if err != nil {
		return fmt.Errorf("take messages: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var (
			id, deliveries, created int64
			msgID, addr             string
			payload, headers        []byte
		)
		if err := rows.Scan(&id, &msgID, &addr, &payload, &headers, &deliveries, &created); err != nil {
			return fmt.Errorf("read message: %w", err)
		}
		msg, err := newMessage(mailbox, w.cl.partition, id, msgID, addr, payload, headers, deliveries, created)
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
	if n := len(w.delivered); n > 0 {
		w.cursor = w.delivered[n-1].Offset
	}
	return nil
}

// newMessage builds a delivered message from its row.
func newMessage(mailbox string, partition int32, id int64, msgID, addr string, payload, headers []byte, deliveries, created int64) (channel.Message, error) {
	typ, aid, _ := strings.Cut(addr, "/")
	msg := channel.Message{
		ID:          msgID,
		Address:     channel.Address{Type: typ, ID: aid},
		Payload:     payload,
		Mailbox:     mailbox,
		Partition:   partition,
		Offset:      id,
		Deliveries:  int(deliveries),
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
