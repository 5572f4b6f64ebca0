package redis

import (
	"cmp"
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

// claim is the reader of one claim. Acks are buffered: a read carries
// them, or the consumer's flusher sends them within AckInterval, or
// Release does. Its scripts are fenced by its lease value, which names the
// epoch.
type claim struct {
	c         *consumer
	s         *lease.Claim
	partition int32
	lease     string        // "<epoch>:<owner>", the lease key's value while it is ours
	keys      []string      // lease, stream
	wake      chan struct{} // wakes the reader while it waits for room
	flushMu   sync.Mutex    // held while acks of the claim are on their way
}

// Start starts the claim's reader.
func (cl *claim) Start(work context.Context) {
	cl.c.readers.Add(1)
	go cl.read(work)
}

// Wake wakes the reader.
func (cl *claim) Wake() { lease.Kick(cl.wake) }

// deliver hands out the entries of a script reply, in order, each {id,
// {field, value, ...}}, and returns the ID of the last ("" when none).
// Room was reserved before the read, so pushing never blocks.
func (cl *claim) deliver(raw []any) (seen string, err error) {
	msgs := make([]channel.Message, len(raw))
	ids := make([]string, len(raw))
	for i, r := range raw {
		if msgs[i], ids[i], err = decodeEntry(r, cl.c.m.name, cl.partition); err != nil {
			return "", fmt.Errorf("partition %d: %w", cl.partition, err)
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
