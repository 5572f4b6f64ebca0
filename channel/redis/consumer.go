package redis

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/postbox-dev/postbox/channel"
	"github.com/postbox-dev/postbox/channel/internal/lease"
)

// consumer is the driver under a Mailbox's consumers (see Mailbox.Consumer).
type consumer struct {
	m      *Mailbox
	opts   ConsumerOptions
	engine *lease.Engine

	// Lock order: claim.flushMu, the claim's lock.
	readers  sync.WaitGroup // claim readers
	flushNow chan struct{}
}

func newConsumer(m *Mailbox, opts ConsumerOptions) *lease.Engine {
	opts = opts.WithDefaults()
	c := &consumer{m: m, opts: opts, flushNow: make(chan struct{}, 1)}
	c.engine = lease.New(lease.Config{Backend: Backend, Mailbox: "redis:" + m.name, Owner: opts.Owner, LeaseTTL: opts.LeaseTTL,
		BatchSize: opts.BatchSize, Buffer: opts.Buffer, Partitions: m.partitions, Err: opts.validate(), Attach: m.runs.Attach}, c)
	return c.engine
}

func (c *consumer) Tick(ctx context.Context, held []lease.Held, take bool) (lease.TickResult, error) {
	n := c.m.partitions
	keys := make([]string, 0, 2+n)
	keys = append(keys, c.m.consumersKey(), c.m.epochsKey())
	for p := range n {
		keys = append(keys, c.m.leaseKey(int32(p)))
	}
	args := make([]any, 0, 4+2*len(held))
	args = append(args, c.opts.Owner, c.opts.LeaseTTL.Milliseconds(), take, len(held))
	for _, h := range held {
		args = append(args, h.Partition, leaseValue(h.Epoch, c.opts.Owner))
	}
	res, err := leaseScript.Run(ctx, c.m.client, keys, args...).Slice()
	if err != nil {
		return lease.TickResult{}, c.m.failed(err)
	}
	if len(res) != 3 {
		return lease.TickResult{}, fmt.Errorf("unexpected reply %v", res)
	}
	out := lease.TickResult{Live: int(toInt(res[0]))}
	for _, p := range toSlice(res[1]) {
		out.Lost = append(out.Lost, int32(toInt(p)))
	}
	taken := toSlice(res[2])
	for i := 0; i+1 < len(taken); i += 2 {
		out.Taken = append(out.Taken, lease.Held{Partition: int32(toInt(taken[i])), Epoch: toInt(taken[i+1])})
	}
	return out, nil
}

// NewClaim makes the reader of a claim the keeper took.
func (c *consumer) NewClaim(s *lease.Claim) lease.ClaimDriver {
	return &claim{c: c, s: s, lease: leaseValue(s.Epoch(), c.opts.Owner),
		keys: c.m.partitionKeys(s.Partition()), wake: make(chan struct{}, 1)}
}

func (c *consumer) Flush() { lease.Kick(c.flushNow) }

// Work runs the ack flusher, every AckInterval or when a claim has a batch
// of acks, then waits for the claims' readers.
func (c *consumer) Work(ctx context.Context) error {
	_ = lease.Every(ctx, c.opts.AckInterval, c.flushNow, func() (bool, error) {
		c.flushAll(ctx, lease.Claims[*claim](c.engine))
		return false, nil
	})
	c.readers.Wait()
	return nil
}

// flushAll sends the claims' buffered acks in one pipeline (one fsync with
// appendfsync always), skipping a claim whose read or Release sends acks.
func (c *consumer) flushAll(ctx context.Context, claims []*claim) {
	type batch struct {
		cl   *claim
		acks []lease.Ref
		cmd  *redis.Cmd
	}
	var todo []batch
	for _, cl := range claims {
		if !cl.flushMu.TryLock() {
			continue
		}
		if acks, _ := cl.s.Take(); len(acks) > 0 {
			todo = append(todo, batch{cl: cl, acks: acks})
		} else {
			cl.flushMu.Unlock()
		}
	}
	if len(todo) == 0 {
		return
	}
	_, _ = c.m.client.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i := range todo {
			b := &todo[i]
			b.cmd = ackScript.EvalSha(ctx, p, b.cl.keys, ackArgs(b.cl.lease, b.acks, false)...)
		}
		return nil
	})
	for _, b := range todo {
		res, err := b.cmd.Int64()
		if redis.HasErrorPrefix(err, "NOSCRIPT") {
			// The server lost its scripts (restart, SCRIPT FLUSH).
			res, err = ackScript.Run(ctx, c.m.client, b.cl.keys, ackArgs(b.cl.lease, b.acks, false)...).Int64()
		}
		switch {
		case err != nil:
			b.cl.s.RestoreAcks(b.acks)
		case res != 1:
			b.cl.s.Lose()
		}
		b.cl.flushMu.Unlock()
	}
}

// toInt reads an integer of a script reply.
func toInt(v any) int64 {
	switch x := v.(type) {
	case int64:
		return x
	case string:
		n, _ := strconv.ParseInt(x, 10, 64)
		return n
	}
	return 0
}

// toSlice reads an array of a script reply.
func toSlice(v any) []any {
	s, _ := v.([]any)
	return s
}

// errLost reports a script that found the lease gone.
var errLost = errors.New("lease lost")

// claim is the reader of one claim. Acks are buffered: a read carries
// them, or the consumer's flusher sends them within AckInterval, or
// Release does. Its scripts are fenced by its lease value, which names the
// epoch.
type claim struct {
	c       *consumer
	s       *lease.Claim
	lease   string        // "<epoch>:<owner>", the lease key's value while it is ours
	keys    []string      // lease, stream
	wake    chan struct{} // wakes the reader while it waits for room
	flushMu sync.Mutex    // held while acks of the claim are on their way
}

func (cl *claim) Start(work context.Context) {
	cl.c.readers.Add(1)
	go cl.read(work)
}

func (cl *claim) Wake() { lease.Kick(cl.wake) }

// deliver hands out the entries of a script reply, in order, each {id,
// {field, value, ...}}, and returns the ID of the last ("" when none).
// Room was reserved before the read, so pushing never blocks.
func (cl *claim) deliver(raw []any) (seen string, err error) {
	msgs := make([]channel.Message, len(raw))
	ids := make([]string, len(raw))
	for i, r := range raw {
		if msgs[i], ids[i], err = decodeEntry(r, cl.c.m.name, cl.s.Partition()); err != nil {
			return "", fmt.Errorf("partition %d: %w", cl.s.Partition(), err)
		}
		seen = ids[i]
	}
	cl.s.Push(msgs, ids)
	return seen, nil
}

// read is the claim's reader: it claims and delivers the partition's
// pending entries, then reads new entries, until the claim is no longer
// active. Each call is safe to repeat after a lost reply: a claim page is
// asked for again from the same cursor, acks are sent again, and a read
// first serves the owner's pending entries after the last entry the claim
// got (after), which are exactly those a lost reply held.
func (cl *claim) read(ctx context.Context) {
	defer cl.c.readers.Done()
	opts := cl.c.opts
	cursor, scanning := "0-0", true
	caughtUp, last, after := false, "", "0-0"
	backoff := time.Duration(0)
	for ctx.Err() == nil {
		room, active := cl.s.Room()
		if !active {
			return
		}
		limit := min(room, opts.BatchSize)
		var err error
		switch {
		case room <= 0:
			cl.sleep(ctx, opts.MaxWait) // until acks make room
			continue
		case scanning:
			var seen string
			cursor, seen, err = cl.claimPending(ctx, cursor, limit)
			scanning = err != nil || cursor != "0-0"
			after = laterID(after, seen)
		case !caughtUp:
			var n int
			var seen string
			n, seen, last, err = cl.readNew(ctx, limit, after)
			caughtUp = err == nil && n < limit
			after = laterID(after, seen)
		default:
			// Block until the stream has an entry after the last one read.
			// XREAD leaves the group alone; the fenced read follows.
			var res []redis.XStream
			res, err = cl.c.m.client.XRead(ctx, &redis.XReadArgs{
				Streams: []string{cl.keys[1], cmp.Or(last, "0-0")},
				Count:   1,
				Block:   opts.MaxWait,
			}).Result()
			caughtUp = err != nil || len(res) == 0 || len(res[0].Messages) == 0
			if errors.Is(err, redis.Nil) {
				err = nil
			}
		}
		switch {
		case errors.Is(err, errLost):
			cl.s.Lose()
			return
		case err != nil:
			// Redis trouble: retry. If it lasts, the lease runs out and the
			// watchdog ends the claim.
			backoff = min(max(2*backoff, 50*time.Millisecond), time.Second)
			cl.sleep(ctx, backoff)
		default:
			backoff = 0
		}
	}
}

// sleep waits for d, a kick, or ctx.
func (cl *claim) sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-cl.wake:
	case <-t.C:
	}
}

// readNew sends the buffered acks and reads up to limit entries: the
// owner's pending entries after the entry ID after, then new ones. It
// returns how many it looked at, the ID of the last of them ("" when none),
// and, when fewer than limit, the ID after which to wait for more.
func (cl *claim) readNew(ctx context.Context, limit int, after string) (n int, seen, last string, err error) {
	cl.flushMu.Lock()
	defer cl.flushMu.Unlock()
	acks, room := cl.s.Take() // no room once the claim stopped: the script only acks
	args := appendIDs([]any{cl.lease, group, cl.c.opts.Owner, min(limit, room), after}, acks)
	res, err := readScript.Run(ctx, cl.c.m.client, cl.keys, args...).Result()
	if err != nil {
		// The script may have run: its acks are sent again (harmless),
		// and what it read is served by the next read, from after.
		cl.s.RestoreAcks(acks)
		return 0, "", "", cl.c.m.failed(err)
	}
	reply, ok := res.([]any)
	if !ok {
		return 0, "", "", errLost
	}
	if len(reply) < 5 {
		return 0, "", "", nil
	}
	if _, err := cl.deliver(toSlice(reply[1])); err != nil {
		return 0, "", "", err
	}
	seen, _ = reply[3].(string)
	last, _ = reply[4].(string)
	return int(toInt(reply[2])), seen, last, nil
}

// laterID returns the later of two stream entry IDs; "" counts as none.
func laterID(a, b string) string {
	ams, aseq, aerr := parseEntryID(a)
	bms, bseq, berr := parseEntryID(b)
	switch {
	case berr != nil:
		return a
	case aerr != nil:
		return b
	case bms > ams || bms == ams && bseq > aseq:
		return b
	}
	return a
}

// claimPending claims one page of the partition's pending entries from
// cursor and hands them out. It returns the next cursor, "0-0" when done,
// and the ID of the last entry it handed out ("" when none).
func (cl *claim) claimPending(ctx context.Context, cursor string, limit int) (next, seen string, err error) {
	res, err := claimScript.Run(ctx, cl.c.m.client, cl.keys, cl.lease, group, cl.c.opts.Owner, cursor, limit).Result()
	if err != nil {
		return cursor, "", cl.c.m.failed(err)
	}
	reply, ok := res.([]any)
	if !ok || len(reply) != 2 {
		return cursor, "", errLost
	}
	if seen, err = cl.deliver(toSlice(reply[1])); err != nil {
		return cursor, "", err
	}
	next, _ = reply[0].(string)
	return next, seen, nil
}

// ackArgs are the ack script's arguments: release drops the lease too.
func ackArgs(leaseValue string, acks []lease.Ref, release bool) []any {
	return appendIDs([]any{leaseValue, group, release}, acks)
}

// appendIDs appends the entry IDs of acks to script arguments.
func appendIDs(args []any, acks []lease.Ref) []any {
	for _, a := range acks {
		args = append(args, a.ID)
	}
	return args
}

// Release sends the buffered acks and drops the lease in one script call,
// so another consumer can take the partition at once.
func (cl *claim) Release(ctx context.Context, take func() []lease.Ref) (bool, error) {
	cl.flushMu.Lock() // acks a read or the flusher has on their way go first
	defer cl.flushMu.Unlock()
	res, err := ackScript.Run(ctx, cl.c.m.client, cl.keys, ackArgs(cl.lease, take(), true)...).Int64()
	return res == 1, cl.c.m.failed(err)
}
