package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/postbox-dev/postbox/channel"
)

// Consumer shares a mailbox's partitions with the other consumers of the
// same file, in this process or others, and hands each partition it owns to
// its caller as a Claim.
//
// Two goroutines do the work while Run runs. The lease keeper, every
// LeaseTTL/3, renews the consumer's heartbeat and leases in one
// transaction, takes free partitions up to its fair share
// ceil(partitions/live consumers), and asks claims beyond that share to
// stop. The poller serves every claim in one transaction per poll: it
// deletes the messages acked since the last poll, applies nacks, and takes
// the next messages of each partition, recording their delivery before any
// is handed out. One transaction for all partitions means one fsync per poll
// instead of one per partition. A poller that has nothing to flush and
// whose claims saw no new message since their last poll (it reads the
// newest offset first) skips the write transaction altogether.
type Consumer struct {
	m       *Mailbox
	opts    ConsumerOptions
	optsErr error

	runMu   sync.Mutex
	started bool
	closed  bool
	cancel  context.CancelFunc
	runDone chan struct{}

	// cycleMu is held by a whole poll (transaction and hand-out). Anything
	// that takes a claim out of the active state holds it too, so a poll
	// never hands messages to a claim that is stopping, lost or released.
	// Lock order: Claim.releaseMu, cycleMu, mu.
	cycleMu  sync.Mutex
	mu       sync.Mutex
	claims   map[int32]*Claim // claims holding a lease: active or draining
	stopping bool             // Run is draining: take no partitions
	handlers sync.WaitGroup   // onClaim calls; Add under mu while !stopping
	wake     chan struct{}
}

var _ channel.Consumer = (*Consumer)(nil)

func newConsumer(m *Mailbox, opts ConsumerOptions) *Consumer {
	opts = opts.WithDefaults()
	return &Consumer{
		m:       m,
		opts:    opts,
		optsErr: opts.validate(),
		claims:  make(map[int32]*Claim),
		wake:    make(chan struct{}, 1),
	}
}

// Backend returns "sqlite".
func (c *Consumer) Backend() string { return Backend }

// Mailbox returns "sqlite:" and the database file's name.
func (c *Consumer) Mailbox() string { return c.m.Identity() }

// Owner returns the name under which the consumer holds leases.
func (c *Consumer) Owner() string { return c.opts.Owner }

// Run takes part in sharing the mailbox's partitions until ctx is cancelled,
// the Consumer or its Mailbox is closed, or a database error that retrying
// cannot fix. It calls onClaim in a new goroutine for every partition the
// consumer comes to own.
//
// Stopping is graceful: Run closes the Messages channel of every claim,
// keeps their leases renewed and their acks flowing while the onClaim calls
// finish their work and Release, and returns once every onClaim call has
// returned. So onClaim must return after Messages is closed, and must not
// wait for Run to return. Run returns nil when stopped by ctx or Close. A
// Consumer runs once; create another to run again.
func (c *Consumer) Run(ctx context.Context, onClaim func(channel.Claim)) error {
	if c.optsErr != nil {
		return c.optsErr
	}
	if onClaim == nil {
		return errors.New("sqlite: Consumer.Run: onClaim is nil: pass a function that consumes the claim and releases it")
	}
	c.runMu.Lock()
	switch {
	case c.closed:
		c.runMu.Unlock()
		return fmt.Errorf("sqlite: consumer run: %w", channel.ErrClosed)
	case c.started:
		c.runMu.Unlock()
		return errors.New("sqlite: Consumer.Run called twice: create a new Consumer to consume again")
	}
	c.m.mu.Lock()
	if c.m.closed {
		c.m.mu.Unlock()
		c.runMu.Unlock()
		return fmt.Errorf("sqlite: consumer run: %w", channel.ErrClosed)
	}
	c.m.runs.Add(1)
	c.m.mu.Unlock()
	defer c.m.runs.Done()

	// ctx ends the run; work keeps the keeper and the poller going until the
	// claims have drained.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	work, stopWork := context.WithCancel(context.WithoutCancel(ctx))
	defer stopWork()
	c.started = true
	c.cancel = cancel
	c.runDone = make(chan struct{})
	defer close(c.runDone)
	c.runMu.Unlock()

	// Closing the Mailbox stops the run.
	go func() {
		select {
		case <-c.m.closing:
			cancel()
		case <-ctx.Done():
		}
	}()

	errc := make(chan error, 2)
	var wg sync.WaitGroup
	wg.Go(func() { errc <- c.keepLeases(work, onClaim) })
	wg.Go(func() { errc <- c.poll(work) })
	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
	}

	// Drain: no new claims, no new deliveries; the onClaim calls finish.
	c.cycleMu.Lock()
	c.mu.Lock()
	c.stopping = true
	for _, cl := range c.claims {
		if cl.state == stateActive {
			cl.state = stateDraining
			cl.closeMessagesLocked()
		}
	}
	c.mu.Unlock()
	c.cycleMu.Unlock()
	// Leave the consumer table at once, so that the others raise their fair
	// share now rather than after LeaseTTL. The keeper, seeing stopping,
	// does not come back.
	leave, cancelLeave := context.WithTimeout(work, c.opts.LeaseTTL)
	_ = c.m.write(leave, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(leave, `DELETE FROM mailbox_consumers WHERE owner = ?`, c.opts.Owner)
		return err
	})
	cancelLeave()
	c.handlers.Wait()
	stopWork()
	wg.Wait()

	if err != nil {
		return fmt.Errorf("sqlite: consumer %s: %w", c.opts.Owner, err)
	}
	return nil
}

// Close stops Run, if it is running, and waits for it to return, so it
// must not be called from onClaim. Later calls to Run return
// channel.ErrClosed. Close is idempotent.
func (c *Consumer) Close() error {
	c.runMu.Lock()
	c.closed = true
	cancel, done := c.cancel, c.runDone
	c.runMu.Unlock()
	if cancel != nil {
		cancel()
		<-done
	}
	return nil
}

// keepLeases runs the lease keeper until ctx is done.
func (c *Consumer) keepLeases(ctx context.Context, onClaim func(channel.Claim)) error {
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if err := c.tickLeases(ctx, onClaim); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		t.Reset(c.opts.LeaseTTL / 3)
	}
}

// tickLeases renews the heartbeat and the leases, takes free partitions up
// to the fair share and stops claims beyond it, in one transaction.
func (c *Consumer) tickLeases(ctx context.Context, onClaim func(channel.Claim)) error {
	type held struct {
		cl     *Claim
		active bool
	}
	c.mu.Lock()
	hold := make([]held, 0, len(c.claims))
	for _, cl := range c.claims {
		hold = append(hold, held{cl, cl.state == stateActive})
	}
	c.mu.Unlock()
	// Stop the highest partitions first: deterministic, and it leaves the
	// low ones where they are.
	slices.SortFunc(hold, func(a, b held) int { return int(a.cl.partition - b.cl.partition) })

	type taken struct {
		partition int32
		epoch     int64
	}
	var (
		lost     []*Claim
		acquired []taken
		stop     []*Claim
	)
	owner := c.opts.Owner
	err := c.m.write(ctx, func(tx *sql.Tx) error {
		lost, acquired, stop = nil, nil, nil
		now := time.Now().UnixNano()
		expires := now + int64(c.opts.LeaseTTL)
		c.mu.Lock()
		stopping := c.stopping
		c.mu.Unlock()
		if stopping {
			// A draining consumer no longer counts: the others may take
			// its partitions as soon as they are released.
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
		var live int
		if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM mailbox_consumers`).Scan(&live); err != nil {
			return fmt.Errorf("count consumers: %w", err)
		}
		live = max(live, 1)
		target := (c.m.partitions + live - 1) / live

		renew, err := c.m.stmt(ctx, tx, `UPDATE mailbox_leases SET expires_at = ?
			WHERE partition = ? AND owner = ? AND epoch = ? AND expires_at > ?`)
		if err != nil {
			return err
		}
		owned, active := 0, 0
		var keep []*Claim
		for _, h := range hold {
			res, err := renew.ExecContext(ctx, expires, h.cl.partition, owner, h.cl.epoch, now)
			if err != nil {
				return fmt.Errorf("renew lease of partition %d: %w", h.cl.partition, err)
			}
			if n, err := res.RowsAffected(); err != nil {
				return err
			} else if n == 0 {
				lost = append(lost, h.cl)
				continue
			}
			owned++
			if h.active {
				active++
				keep = append(keep, h.cl)
			}
		}
		if stopping {
			return nil // renew only
		}
		if active > target {
			stop = keep[len(keep)-(active-target):]
		}
		if owned >= target {
			return nil
		}
		rows, err := tx.QueryContext(ctx, `SELECT partition FROM mailbox_leases WHERE expires_at <= ? ORDER BY partition`, now)
		if err != nil {
			return fmt.Errorf("find free partitions: %w", err)
		}
		var free []int32
		for rows.Next() {
			var p int32
			if err := rows.Scan(&p); err != nil {
				rows.Close()
				return err
			}
			free = append(free, p)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		take, err := c.m.stmt(ctx, tx, `UPDATE mailbox_leases SET owner = ?, epoch = epoch + 1, expires_at = ?
			WHERE partition = ? AND expires_at <= ? RETURNING epoch`)
		if err != nil {
			return err
		}
		for _, p := range free {
			if owned >= target {
				break
			}
			var epoch int64
			if err := take.QueryRowContext(ctx, owner, expires, p, now).Scan(&epoch); err != nil {
				if errors.Is(err, sql.ErrNoRows) {
					continue
				}
				return fmt.Errorf("take partition %d: %w", p, err)
			}
			acquired = append(acquired, taken{p, epoch})
			owned++
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("renew leases: %w", err)
	}

	var started []*Claim
	c.cycleMu.Lock()
	c.mu.Lock()
	for _, cl := range lost {
		// A claim being released dropped its lease itself.
		if (cl.state == stateActive || cl.state == stateDraining) && !cl.releasing {
			cl.loseLocked()
		}
	}
	for _, cl := range stop {
		if cl.state == stateActive {
			cl.state = stateDraining
			cl.closeMessagesLocked()
		}
	}
	var giveBack []*Claim
	for _, a := range acquired {
		cl := newClaim(c, a.partition, a.epoch)
		if c.stopping {
			// Run began draining during the transaction.
			giveBack = append(giveBack, cl)
			continue
		}
		c.claims[a.partition] = cl
		c.handlers.Add(1)
		started = append(started, cl)
	}
	c.mu.Unlock()
	c.cycleMu.Unlock()
	for _, cl := range started {
		go func() {
			defer c.handlers.Done()
			onClaim(cl)
		}()
	}
	if len(started) > 0 {
		c.kick()
	}
	if len(giveBack) > 0 {
		err := c.m.write(ctx, func(tx *sql.Tx) error {
			for _, cl := range giveBack {
				if err := dropLease(ctx, tx, cl.partition, owner, cl.epoch); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("give back partitions taken while stopping: %w", err)
		}
	}
	return nil
}

// dropLease frees a partition held under epoch, so that another consumer
// can take it at once. A lease taken over since is left alone.
func dropLease(ctx context.Context, tx *sql.Tx, partition int32, owner string, epoch int64) error {
	_, err := tx.ExecContext(ctx, `UPDATE mailbox_leases SET owner = '', expires_at = 0
		WHERE partition = ? AND owner = ? AND epoch = ?`, partition, owner, epoch)
	if err != nil {
		return fmt.Errorf("drop lease of partition %d: %w", partition, err)
	}
	return nil
}

// kick wakes the poller without blocking.
func (c *Consumer) kick() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// poll runs the poller until ctx is done.
func (c *Consumer) poll(ctx context.Context) error {
	t := time.NewTimer(c.opts.PollInterval)
	defer t.Stop()
	for {
		again, err := c.pollOnce(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		if !again {
			t.Reset(c.opts.PollInterval)
			select {
			case <-ctx.Done():
				return nil
			case <-c.wake:
			case <-t.C:
			}
		} else if ctx.Err() != nil {
			return nil
		}
	}
}

// work is what one poll does for one claim.
type work struct {
	cl    *Claim
	from  int64 // scan rows after this offset
	limit int   // deliver at most this many
	acks  []int64
	nacks []nack

	// results
	lost      bool
	delivered []channel.Message
	cursor    int64
	retryAt   int64 // earliest visible_at of a held-back row, 0 if none
}

// newestOffsetSQL reads the highest offset ever given to a message
// (AUTOINCREMENT keeps it in sqlite_sequence).
const newestOffsetSQL = `SELECT coalesce(max(seq), 0) FROM sqlite_sequence WHERE name = 'mailbox_messages'`

// pollOnce polls every claim that has room or acks to flush, in one write
// transaction. It reports whether some claim got a full batch, meaning more
// messages are probably waiting.
func (c *Consumer) pollOnce(ctx context.Context) (bool, error) {
	c.cycleMu.Lock()
	defer c.cycleMu.Unlock()

	// A claim that has polled before, got everything there was and holds
	// nothing back only needs polling when something was published since.
	// The highest offset ever published tells, read without the write
	// lock: idle consumers leave the lock to those who need it.
	now := time.Now().UnixNano()
	idle := func(cl *Claim) bool {
		return cl.polled && !cl.more && len(cl.nacks) == 0 && (cl.retryAt == 0 || now < cl.retryAt)
	}
	c.mu.Lock()
	needSeq := false
	for _, cl := range c.claims {
		needSeq = needSeq || cl.state == stateActive && idle(cl)
	}
	c.mu.Unlock()
	seq, seqKnown := int64(0), false
	if needSeq {
		if err := c.m.db.QueryRowContext(ctx, newestOffsetSQL).Scan(&seq); err != nil {
			return false, fmt.Errorf("poll: read the newest offset: %w", err)
		}
		seqKnown = true
	}

	c.mu.Lock()
	var todo []*work
	for _, cl := range c.claims {
		w := &work{cl: cl, from: cl.cursor, acks: cl.acks, nacks: cl.nacks}
		cl.acks, cl.nacks = nil, nil
		if cl.state == stateActive {
			if !idle(cl) || !seqKnown || seq > cl.seenSeq || len(w.nacks) > 0 {
				w.limit = min(c.opts.BatchSize, c.opts.Buffer-len(cl.inflight), cap(cl.msgs)-len(cl.msgs))
			}
			for _, n := range w.nacks {
				w.from = min(w.from, n.offset-1)
			}
		}
		if w.limit > 0 || len(w.acks) > 0 || len(w.nacks) > 0 {
			todo = append(todo, w)
		}
	}
	c.mu.Unlock()
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
	c.mu.Lock()
	defer c.mu.Unlock()
	if err != nil {
		// Nothing was applied: keep the acks and nacks for the next poll.
		for _, w := range todo {
			if w.cl.state == stateActive || w.cl.state == stateDraining {
				w.cl.acks = append(w.acks, w.cl.acks...)
				w.cl.nacks = append(w.nacks, w.cl.nacks...)
			}
		}
		return false, fmt.Errorf("poll: %w", err)
	}
	again := false
	for _, w := range todo {
		cl := w.cl
		if w.lost {
			if (cl.state == stateActive || cl.state == stateDraining) && !cl.releasing {
				cl.loseLocked()
			}
			continue
		}
		if cl.state != stateActive {
			continue
		}
		if w.limit == 0 {
			if len(w.nacks) > 0 {
				// Applied without a scan (no room): rescan from the
				// nacked rows once there is room.
				cl.cursor, cl.more = w.from, true
			}
			continue
		}
		cl.cursor = w.cursor
		cl.polled, cl.seenSeq, cl.retryAt = true, seq, w.retryAt
		cl.more = len(w.delivered) == w.limit
		for _, msg := range w.delivered {
			cl.inflight[msg.Offset] = struct{}{}
			cl.msgs <- msg // never blocks: limit reserved the room
		}
		if len(w.delivered) == w.limit {
			again = true
		}
	}
	return again, nil
}

// pollTx is the body of a poll transaction.
func (c *Consumer) pollTx(ctx context.Context, tx *sql.Tx, todo []*work) error {
	now := time.Now().UnixNano()
	type lease struct{ epoch, expires int64 }
	leases := make(map[int32]lease)
	rows, err := tx.QueryContext(ctx, `SELECT partition, epoch, expires_at FROM mailbox_leases WHERE owner = ?`, c.opts.Owner)
	if err != nil {
		return fmt.Errorf("read leases: %w", err)
	}
	for rows.Next() {
		var p int32
		var l lease
		if err := rows.Scan(&p, &l.epoch, &l.expires); err != nil {
			rows.Close()
			return err
		}
		leases[p] = l
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}

	var st *pollStmts
	for _, w := range todo {
		w.lost, w.delivered, w.cursor, w.retryAt = false, nil, w.from, 0
		if l, ok := leases[w.cl.partition]; !ok || l.epoch != w.cl.epoch || l.expires <= now {
			// Another consumer may own the partition now: touch nothing.
			w.lost = true
			continue
		}
		if st == nil {
			if st, err = prepareStmts(ctx, c.m, tx); err != nil {
				return err
			}
		}
		if err := st.apply(ctx, w); err != nil {
			return err
		}
		if w.limit > 0 {
			if err := st.take(ctx, w, now, c.m.name); err != nil {
				return err
			}
		}
	}
	return nil
}
