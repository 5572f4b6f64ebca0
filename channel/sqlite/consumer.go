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

// consumer is the driver under a Mailbox's consumers (see Mailbox.Consumer).
type consumer struct {
	m      *Mailbox
	opts   ConsumerOptions
	engine *lease.Engine

	// cycleMu is held by a whole poll and guards the claims' poll fields.
	// Release takes its acks under it, so that a poll's acks are durable
	// before Release drops the lease. Lock order: cycleMu, the claim's lock.
	cycleMu sync.Mutex
	wake    chan struct{}
}

func newConsumer(m *Mailbox, opts ConsumerOptions) *lease.Engine {
	opts = opts.WithDefaults()
	c := &consumer{m: m, opts: opts, wake: make(chan struct{}, 1)}
	c.engine = lease.New(lease.Config{Backend: Backend, Mailbox: m.Identity(), Owner: opts.Owner, LeaseTTL: opts.LeaseTTL,
		BatchSize: opts.BatchSize, Buffer: opts.Buffer, Partitions: m.partitions, Err: opts.validate(), Attach: m.runs.Attach}, c)
	return c.engine
}

func (c *consumer) Tick(ctx context.Context, held []lease.Held, take bool) (lease.TickResult, error) {
	var res lease.TickResult
	owner := c.opts.Owner
	err := c.m.write(ctx, func(tx *sql.Tx) error {
		now := time.Now().UnixNano()
		expires := now + int64(c.opts.LeaseTTL)
		if !take {
			if _, err := tx.ExecContext(ctx, `DELETE FROM mailbox_consumers WHERE owner = ?`, owner); err != nil {
				return fmt.Errorf("leave: %w", err)
			}
		} else if _, err := tx.ExecContext(ctx, `INSERT INTO mailbox_consumers (owner, heartbeat, expires_at) VALUES (?, ?, ?)
			ON CONFLICT (owner) DO UPDATE SET heartbeat = excluded.heartbeat, expires_at = excluded.expires_at`,
			owner, now, expires); err != nil {
			return fmt.Errorf("heartbeat: %w", err)
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM mailbox_consumers WHERE expires_at <= ?`, now); err != nil {
			return fmt.Errorf("forget dead consumers: %w", err)
		}
		if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM mailbox_consumers`).Scan(&res.Live); err != nil {
			return fmt.Errorf("count consumers: %w", err)
		}

		renew, err := c.m.stmt(ctx, tx, `UPDATE mailbox_leases SET expires_at = ?
			WHERE partition = ? AND owner = ? AND epoch = ? AND expires_at > ?`)
		if err != nil {
			return err
		}
		for _, h := range held {
			r, err := renew.ExecContext(ctx, expires, h.Partition, owner, h.Epoch, now)
			if err != nil {
				return fmt.Errorf("renew lease of partition %d: %w", h.Partition, err)
			}
			if n, err := r.RowsAffected(); err != nil {
				return err
			} else if n == 0 {
				res.Lost = append(res.Lost, h.Partition)
			}
		}
		want := lease.FairShare(c.m.partitions, res.Live) - (len(held) - len(res.Lost))
		if !take || want <= 0 {
			return nil
		}
		res.Taken, err = scanLeases(tx.QueryContext(ctx, `UPDATE mailbox_leases SET owner = ?, epoch = epoch + 1, expires_at = ?
			WHERE partition IN (SELECT partition FROM mailbox_leases WHERE expires_at <= ? ORDER BY partition LIMIT ?)
			RETURNING partition, epoch`, owner, expires, now, want))
		if err != nil {
			return fmt.Errorf("take partitions: %w", err)
		}
		return nil
	})
	return res, err
}

// scanLeases reads rows of (partition, epoch), in partition order.
func scanLeases(rows *sql.Rows, err error) ([]lease.Held, error) {
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []lease.Held
	for rows.Next() {
		var h lease.Held
		if err := rows.Scan(&h.Partition, &h.Epoch); err != nil {
			return nil, err
		}
		out = append(out, h)
	}
	slices.SortFunc(out, func(a, b lease.Held) int { return cmp.Compare(a.Partition, b.Partition) })
	return out, rows.Err()
}

// NewClaim makes the poll state of a claim the keeper took.
func (c *consumer) NewClaim(s *lease.Claim) lease.ClaimDriver {
	return &claim{c: c, s: s}
}

func (c *consumer) Flush() { lease.Kick(c.wake) }

// Work is the poller.
func (c *consumer) Work(ctx context.Context) error {
	return lease.Every(ctx, c.opts.PollInterval, c.wake, func() (bool, error) { return c.pollOnce(ctx) })
}

// work is what one poll does for one claim.
type work struct {
	cl    *claim
	from  int64 // take rows after this offset
	limit int   // deliver at most this many
	acks  []lease.Ref

	lost      bool
	delivered []channel.Message // in offset order
}

// newestOffsetSQL reads the highest offset ever given (AUTOINCREMENT keeps it).
const newestOffsetSQL = `SELECT coalesce(max(seq), 0) FROM sqlite_sequence WHERE name = 'mailbox_messages'`

// pollOnce polls every claim that has room or acks to flush, in one write
// transaction. It reports whether some claim got a full batch, meaning more
// messages are probably waiting.
func (c *consumer) pollOnce(ctx context.Context) (bool, error) {
	c.cycleMu.Lock()
	defer c.cycleMu.Unlock()

	// A claim that got everything there was at its last poll needs polling
	// only when something was published since: the newest offset tells,
	// read without the write lock, which idle consumers leave to others.
	idle := func(cl *claim) bool { return cl.polled && !cl.more }
	claims := lease.Claims[*claim](c.engine)
	seq, seqKnown := int64(0), false
	if slices.ContainsFunc(claims, idle) {
		if err := c.m.db.QueryRowContext(ctx, newestOffsetSQL).Scan(&seq); err != nil {
			return false, fmt.Errorf("poll: read the newest offset: %w", err)
		}
		seqKnown = true
	}

	var todo []*work
	for _, cl := range claims {
		acks, room := cl.s.Take()
		w := &work{cl: cl, from: cl.cursor, acks: acks}
		if !idle(cl) || !seqKnown || seq > cl.seenSeq {
			w.limit = min(c.opts.BatchSize, room)
		}
		if w.limit > 0 || len(w.acks) > 0 {
			todo = append(todo, w)
		}
	}
	if len(todo) == 0 {
		return false, nil
	}

	err := c.m.writeBookkeeping(ctx, func(tx *sql.Tx) error {
		// Read again under the write lock: rows published from here on
		// have higher offsets.
		if err := tx.QueryRowContext(ctx, newestOffsetSQL).Scan(&seq); err != nil {
			return fmt.Errorf("read the newest offset: %w", err)
		}
		return c.pollTx(ctx, tx, todo)
	})
	if err != nil {
		for _, w := range todo {
			w.cl.s.RestoreAcks(w.acks) // nothing was applied
		}
		return false, fmt.Errorf("poll: %w", err)
	}
	again := false
	for _, w := range todo {
		cl, n := w.cl, len(w.delivered)
		switch {
		case w.lost:
			cl.s.Lose()
		case w.limit > 0 && cl.s.Push(w.delivered, nil):
			cl.polled, cl.seenSeq, cl.more = true, seq, n == w.limit
			again = again || cl.more
			if n > 0 {
				cl.cursor = w.delivered[n-1].Offset
			}
		}
	}
	return again, nil
}

// pollTx is a poll's transaction. A claim whose lease is gone touches
// nothing: another consumer may own the partition.
func (c *consumer) pollTx(ctx context.Context, tx *sql.Tx, todo []*work) error {
	leases, err := scanLeases(tx.QueryContext(ctx, `SELECT partition, epoch FROM mailbox_leases WHERE owner = ? AND expires_at > ?`,
		c.opts.Owner, time.Now().UnixNano()))
	if err != nil {
		return fmt.Errorf("read leases: %w", err)
	}
	for _, w := range todo {
		w.lost, w.delivered = !slices.Contains(leases, lease.Held{Partition: w.cl.s.Partition(), Epoch: w.cl.s.Epoch()}), nil
		if w.lost {
			continue
		}
		if err := c.deleteAcked(ctx, tx, w.cl, w.acks); err != nil {
			return err
		}
		if w.limit > 0 {
			if err := c.takeNext(ctx, tx, w); err != nil {
				return err
			}
		}
	}
	return nil
}

// claim is the poll state of one claim. A poll marks the rows it takes
// with the claim's epoch, and only acks of that epoch delete them: a
// zombie cannot delete a message the next owner has taken.
type claim struct {
	c *consumer
	s *lease.Claim

	// Guarded by c.cycleMu: what the last poll of this claim saw.
	cursor  int64 // every row of the partition up to here is delivered by this claim or gone
	polled  bool  // polled at least once
	seenSeq int64 // the mailbox's highest offset then
	more    bool  // it stopped at its limit: more rows may be waiting
}

// Start and Wake wake the poller.
func (cl *claim) Start(context.Context) { lease.Kick(cl.c.wake) }
func (cl *claim) Wake()                 { lease.Kick(cl.c.wake) }

// Release deletes the acked messages and drops the lease in one
// transaction, so another consumer can take the partition at once.
func (cl *claim) Release(ctx context.Context, take func() []lease.Ref) (bool, error) {
	c := cl.c
	c.cycleMu.Lock() // a poll under way applies or restores its acks first
	acks := take()
	c.cycleMu.Unlock()
	var ours bool
	err := c.m.write(ctx, func(tx *sql.Tx) error {
		if err := c.deleteAcked(ctx, tx, cl, acks); err != nil {
			return err
		}
		// A lease taken over since is left alone, and the claim ends lost.
		res, err := tx.ExecContext(ctx, `UPDATE mailbox_leases SET owner = '', expires_at = 0
			WHERE partition = ? AND owner = ? AND epoch = ?`, cl.s.Partition(), c.opts.Owner, cl.s.Epoch())
		if err != nil {
			return fmt.Errorf("drop lease of partition %d: %w", cl.s.Partition(), err)
		}
		n, err := res.RowsAffected()
		ours = n == 1
		return err
	})
	return ours, err
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
	if _, err := st.ExecContext(ctx, jsonInts(acks), cl.s.Epoch()); err != nil {
		return fmt.Errorf("delete acked: %w", err)
	}
	return nil
}

// takeNext takes up to w.limit rows after w.from, marked with the epoch.
func (c *consumer) takeNext(ctx context.Context, tx *sql.Tx, w *work) error {
	// OR FAIL: nothing here can violate a constraint, and without the
	// default ABORT, SQLite keeps no statement journal for the update.
	st, err := c.m.stmt(ctx, tx, `UPDATE OR FAIL mailbox_messages SET claim = ?1
		WHERE id IN (SELECT id FROM mailbox_messages WHERE partition = ?2 AND id > ?3 ORDER BY id LIMIT ?4)
		RETURNING id, msg_id, address, payload, headers, created_at`)
	if err != nil {
		return err
	}
	rows, err := st.QueryContext(ctx, w.cl.s.Epoch(), w.cl.s.Partition(), w.from, w.limit)
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
			Mailbox: c.m.name, Partition: w.cl.s.Partition(), Offset: id, PublishedAt: time.Unix(0, created)}
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
