package redis

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/postbox-dev/postbox/channel"
	"github.com/postbox-dev/postbox/channel/internal/lease"
)

// errLost reports a script that found the lease gone.
var errLost = errors.New("lease lost")

// Claim is one partition owned by a Consumer under one lease epoch.
//
// Acks are buffered: a read carries them, or the consumer's
// flusher sends them within AckInterval, or Release does. Every script of
// the claim is fenced by its lease value, which names the epoch: after the
// lease is lost, neither this claim nor its (possibly paused) process can
// read, claim or ack entries of the partition.
type Claim struct {
	c         *Consumer
	s         *lease.Slot // its lock guards the fields below
	partition int32
	epoch     int64
	lease     string        // "<epoch>:<owner>", the lease key's value while it is ours
	keys      []string      // lease, stream
	wake      chan struct{} // wakes the reader while it waits for room
	releaseMu sync.Mutex    // serializes Release calls
	flushMu   sync.Mutex    // held while acks of the claim are on their way

	inflight map[int64]string // handed out, not acked: offset -> entry ID
	acks     []string
}

var _ channel.Claim = (*Claim)(nil)

func newClaim(c *Consumer, s *lease.Slot) *Claim {
	return &Claim{
		c:         c,
		s:         s,
		partition: s.Partition(),
		epoch:     s.Epoch(),
		lease:     leaseValue(s.Epoch(), c.opts.Owner),
		keys:      c.m.partitionKeys(s.Partition()),
		wake:      make(chan struct{}, 1),
		inflight:  make(map[int64]string),
	}
}

// Partition returns the claimed partition.
func (cl *Claim) Partition() int32 { return cl.partition }

// Epoch returns the lease epoch: it grows every time the partition changes
// hands.
func (cl *Claim) Epoch() int64 { return cl.epoch }

// Messages delivers the partition's messages in offset order. It is closed
// when the claim is stopping (rebalance, Run ending, Release) or lost.
func (cl *Claim) Messages() <-chan channel.Message { return cl.s.Messages() }

// Lost is closed when the lease was lost, or could not be renewed in time
// by the local clock: another consumer may own the partition, so stop
// working on it. Acks after that are ignored.
func (cl *Claim) Lost() <-chan struct{} { return cl.s.Lost() }

// Start starts the claim's reader.
func (cl *Claim) Start(work context.Context) {
	cl.c.readers.Add(1)
	go cl.read(work)
}

// Wake wakes the reader.
func (cl *Claim) Wake() { cl.kick() }

// kick wakes the reader without blocking.
func (cl *Claim) kick() {
	select {
	case cl.wake <- struct{}{}:
	default:
	}
}

// roomLocked is how many more messages the claim may take in.
func (cl *Claim) roomLocked() int {
	return cl.c.opts.Buffer - len(cl.inflight)
}

// got is an entry as a script returned it, decoded.
type got struct {
	msg     channel.Message
	entryID string
}

// deliver hands out the entries of a script reply, in order, each {id,
// {field, value, ...}}. Room was reserved before the read, so pushing never
// blocks. It returns the ID of the last entry ("" when none).
func (cl *Claim) deliver(raw []any) (seen string, err error) {
	entries := make([]got, 0, len(raw))
	for _, r := range raw {
		msg, id, err := decodeEntry(r, cl.c.m.name, cl.partition)
		if err != nil {
			return "", fmt.Errorf("partition %d: %w", cl.partition, err)
		}
		entries = append(entries, got{msg: msg, entryID: id})
		seen = id
	}
	cl.s.Lock()
	defer cl.s.Unlock()
	if cl.s.ActiveLocked() {
		for _, e := range entries {
			cl.inflight[e.msg.Offset] = e.entryID
			cl.s.PushLocked(e.msg)
		}
	}
	return seen, nil
}

// read is the claim's reader: it first claims and delivers the partition's
// pending entries, then reads new entries. It returns when the claim is no
// longer active.
//
// Every call may have run on the server although its reply was lost (or
// ran twice, when the client retried it), so each is safe to repeat: a
// claim page is asked for again from the same cursor, acks are sent again,
// and a read first serves the owner's pending entries after the last entry
// the claim got (after), which are exactly those a lost reply held.
func (cl *Claim) read(ctx context.Context) {
	defer cl.c.readers.Done()
	opts := cl.c.opts
	cursor, scanning := "0-0", true
	caughtUp, last, after := false, "", "0-0"
	backoff := time.Duration(0)
	for ctx.Err() == nil {
		cl.s.Lock()
		if !cl.s.ActiveLocked() {
			cl.s.Unlock()
			return
		}
		room := cl.roomLocked()
		cl.s.Unlock()

		var err error
		if room > 0 && !caughtUp {
			limit := min(room, opts.BatchSize)
			var seen string
			if scanning {
				cursor, seen, err = cl.claimPending(ctx, cursor, limit)
				scanning = err != nil || cursor != "0-0"
			} else {
				var n int
				n, seen, last, err = cl.readNew(ctx, limit, after)
				caughtUp = err == nil && n < limit
			}
			if err == nil {
				after = laterID(after, seen)
				backoff = 0
				continue
			}
		}
		if errors.Is(err, errLost) {
			cl.s.Lose()
			return
		}
		if err != nil {
			// Redis trouble: retry. If it lasts, the lease runs out and the
			// watchdog ends the claim.
			backoff = min(max(2*backoff, 50*time.Millisecond), time.Second)
			cl.sleep(ctx, backoff)
			continue
		}

		if room <= 0 {
			cl.sleep(ctx, opts.MaxWait) // until acks make room
			continue
		}
		// Caught up: block until the stream has an entry after the last
		// one read. XREAD leaves the group alone; the fenced read follows.
		if last == "" {
			last = "0-0"
		}
		res, err := cl.c.m.client.XRead(ctx, &redis.XReadArgs{
			Streams: []string{cl.keys[1], last},
			Count:   1,
			Block:   opts.MaxWait,
		}).Result()
		switch {
		case err == nil && len(res) > 0 && len(res[0].Messages) > 0:
			caughtUp = false
		case err != nil && !errors.Is(err, redis.Nil):
			backoff = min(max(2*backoff, 50*time.Millisecond), time.Second)
			cl.sleep(ctx, backoff)
		}
	}
}

// sleep waits for d, a kick, or ctx.
func (cl *Claim) sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-cl.wake:
	case <-t.C:
	}
}

// takeAcksLocked takes the buffered acks.
func (cl *Claim) takeAcksLocked() []string {
	acks := cl.acks
	cl.acks = nil
	return acks
}

// restoreAcks puts acks that could not be sent back in front.
func (cl *Claim) restoreAcks(acks []string) {
	cl.s.Lock()
	defer cl.s.Unlock()
	if cl.s.HoldsLocked() {
		cl.acks = append(acks, cl.acks...)
	}
}

// readNew sends the buffered acks and reads up to limit entries: the
// owner's pending entries after the entry ID after (read by a call whose
// reply was lost), then new ones. It returns how many it looked at, the ID
// of the last of them ("" when none), and, when fewer than limit, the ID
// after which to wait for more.
func (cl *Claim) readNew(ctx context.Context, limit int, after string) (n int, seen, last string, err error) {
	cl.flushMu.Lock()
	defer cl.flushMu.Unlock()
	cl.s.Lock()
	if !cl.s.ActiveLocked() {
		cl.s.Unlock()
		return 0, "", "", nil
	}
	acks := cl.takeAcksLocked()
	cl.s.Unlock()
	args := appendIDs([]any{cl.lease, group, cl.c.opts.Owner, limit, after}, acks)
	res, err := readScript.Run(ctx, cl.c.m.client, cl.keys, args...).Result()
	if err != nil {
		// The script may have run: its acks are sent again (harmless),
		// and what it read is served by the next read, from after.
		cl.restoreAcks(acks)
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

// claimPending claims one page of the partition's pending entries from cursor
// and hands them out. It returns the next cursor, "0-0" when done, and the
// ID of the last entry it handed out ("" when none). When the reply is
// lost, the same cursor claims the same page again.
func (cl *Claim) claimPending(ctx context.Context, cursor string, limit int) (next, seen string, err error) {
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

// sendAcks runs the ack script; release drops the lease too. It reports
// whether the lease was still the claim's.
func (cl *Claim) sendAcks(ctx context.Context, acks []string, release bool) (bool, error) {
	res, err := ackScript.Run(ctx, cl.c.m.client, cl.keys, ackArgs(cl.lease, acks, release)...).Int64()
	if err != nil {
		return false, cl.c.m.failed(err)
	}
	return res == 1, nil
}

// ackArgs are the ack script's arguments for the lease value lease.
func ackArgs(lease string, acks []string, release bool) []any {
	rel := "0"
	if release {
		rel = "1"
	}
	return appendIDs([]any{lease, group, rel}, acks)
}

// appendIDs appends entry IDs to script arguments.
func appendIDs(args []any, ids []string) []any {
	for _, id := range ids {
		args = append(args, id)
	}
	return args
}

// Ack acknowledges delivered messages of this claim. The acks are buffered
// and become durable with the next read or flush (within AckInterval) or
// Release; until then a crash redelivers them. Acks after Lost are ignored;
// acking a message that is not outstanding (already acked) does nothing.
func (cl *Claim) Ack(_ context.Context, msgs ...channel.Message) error {
	cl.s.Lock()
	wasFull := cl.roomLocked() <= 0
	for _, m := range msgs {
		if ignore, err := cl.s.AckableLocked(m); ignore {
			cl.s.Unlock()
			return err
		}
		if id, ok := cl.inflight[m.Offset]; ok {
			delete(cl.inflight, m.Offset)
			cl.acks = append(cl.acks, id)
		}
	}
	batch := len(cl.acks) >= cl.c.opts.BatchSize
	cl.s.Unlock()
	if wasFull {
		cl.kick()
	}
	if batch {
		cl.c.kickFlush()
	}
	return nil
}

// Release closes Messages, makes the buffered acks durable and drops the
// lease, in one script call, so another consumer can take the partition at
// once. Messages delivered and not acked are redelivered to the next owner.
// If the lease turns out to be lost, nothing is applied and Lost is closed.
// After Lost, Release only closes the claim. Release is idempotent; when it
// fails (ctx ended, Redis error) it may be called again.
func (cl *Claim) Release(ctx context.Context) error {
	cl.releaseMu.Lock()
	defer cl.releaseMu.Unlock()
	if !cl.s.BeginRelease() {
		return nil
	}
	cl.kick()

	// Wait for acks a read or the flusher has on their way.
	cl.flushMu.Lock()
	cl.s.Lock()
	acks := cl.takeAcksLocked()
	cl.s.Unlock()
	ok, err := cl.sendAcks(ctx, acks, true)
	cl.flushMu.Unlock()

	cl.s.EndRelease(err, ok)
	cl.kick()
	if err != nil {
		cl.restoreAcks(acks)
		return fmt.Errorf("redis: release partition %d: %w", cl.partition, err)
	}
	return nil
}
