package redis

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/postbox-dev/postbox/channel"
	"github.com/postbox-dev/postbox/channel/internal/lease"
)

// errLost reports a script that found the lease gone.
var errLost = errors.New("lease lost")

// redeliverChunk bounds the entry IDs of one redeliver script call.
const redeliverChunk = 256

// held is a message of the claim that is not handed out: nacked and
// waiting for its delay, or behind a nacked message of its address.
type held struct {
	msg     channel.Message
	entryID string
	nacked  bool      // waits until readyAt
	readyAt time.Time // for nacked
	claimed bool      // in this owner's pending list with the delivery counted: no XCLAIM needed
}

// nackHint is a nack to record in the partition's nack hash.
type nackHint struct {
	entryID string
	readyAt time.Time
}

// Claim is one partition owned by a Consumer under one lease epoch.
//
// Acks and nacks are buffered: a read carries them, or the consumer's
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
	keys      []string      // lease, stream, nack hash
	wake      chan struct{} // wakes the reader while it waits for room
	releaseMu sync.Mutex    // serializes Release calls
	flushMu   sync.Mutex    // held while acks of the claim are on their way

	inflight map[int64]string // handed out, not acked or nacked: offset -> entry ID
	holding  map[string][]*held
	nHeld    int
	acks     []string
	nacks    []nackHint
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
		holding:   make(map[string][]*held),
	}
}

// Partition returns the claimed partition.
func (cl *Claim) Partition() int32 { return cl.partition }

// Epoch returns the lease epoch: it grows every time the partition changes
// hands.
func (cl *Claim) Epoch() int64 { return cl.epoch }

// Messages delivers the partition's messages in offset order, except that
// a nacked message comes back later, and holds back the later messages of
// its address until then. It is closed when the claim is stopping
// (rebalance, Run ending, Release) or lost.
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
	return cl.c.opts.Buffer - len(cl.inflight) - cl.nHeld
}

// pushLocked hands msg out. Room was reserved when it was read, so the
// send never blocks. The caller holds mu and the claim is active.
func (cl *Claim) pushLocked(msg channel.Message, entryID string) {
	cl.inflight[msg.Offset] = entryID
	cl.s.PushLocked(msg)
}

// holdLocked queues h behind its address, in offset order.
func (cl *Claim) holdLocked(h *held) {
	addr := h.msg.Address.String()
	q := cl.holding[addr]
	i, _ := slices.BinarySearchFunc(q, h.msg.Offset, func(x *held, off int64) int { return cmp.Compare(x.msg.Offset, off) })
	cl.holding[addr] = slices.Insert(q, i, h)
	cl.nHeld++
}

// got is an entry as a script returned it, decoded.
type got struct {
	msg     channel.Message
	entryID string
	wait    time.Duration // > 0: a nack delay is still running
}

// dispatch hands out what the reader got, in order, unless its address
// is held back.
func (cl *Claim) dispatch(entries []got) {
	now := time.Now()
	cl.s.Lock()
	defer cl.s.Unlock()
	if !cl.s.ActiveLocked() {
		return
	}
	for _, e := range entries {
		if e.wait > 0 {
			// Claimed from the pending list with a nack delay still
			// running: its delivery is counted already.
			cl.holdLocked(&held{msg: e.msg, entryID: e.entryID, nacked: true, readyAt: now.Add(e.wait), claimed: true})
			continue
		}
		if len(cl.holding[e.msg.Address.String()]) > 0 {
			cl.holdLocked(&held{msg: e.msg, entryID: e.entryID})
			continue
		}
		cl.pushLocked(e.msg, e.entryID)
	}
}

// releaseDueLocked hands out held messages that may go: those at the
// front of their address's queue that are not nacked, or whose delay has
// passed and that are claimed. It returns the due nacked messages that must
// be claimed again first.
func (cl *Claim) releaseDueLocked(now time.Time) []*held {
	var claim []*held
	for addr, q := range cl.holding {
		for len(q) > 0 {
			h := q[0]
			if h.nacked && h.readyAt.After(now) {
				break
			}
			if h.nacked && !h.claimed {
				claim = append(claim, h)
				break
			}
			cl.pushLocked(h.msg, h.entryID)
			q = q[1:]
			cl.nHeld--
		}
		if len(q) == 0 {
			delete(cl.holding, addr)
		} else {
			cl.holding[addr] = q
		}
	}
	return claim
}

// nextDueLocked is how long until the first held nacked message is due,
// or 0 when none waits.
func (cl *Claim) nextDueLocked(now time.Time) time.Duration {
	var first time.Duration
	for _, q := range cl.holding {
		if h := q[0]; h.nacked {
			d := max(h.readyAt.Sub(now), time.Millisecond)
			if first == 0 || d < first {
				first = d
			}
		}
	}
	return first
}

// read is the claim's reader: it first claims and delivers the partition's
// pending entries, then reads new entries, and redelivers nacked ones when
// their delay has passed. It returns when the claim is no longer active.
//
// Every call may have run on the server although its reply was lost (or
// ran twice, when the client retried it), so each is safe to repeat: a
// claim page is asked for again from the same cursor, a redelivery claims
// again, acks are sent again, and a read first serves the owner's pending
// entries after the last entry the claim got (after), which are exactly
// those a lost reply held.
func (cl *Claim) read(ctx context.Context) {
	defer cl.c.readers.Done()
	opts := cl.c.opts
	cursor, scanning := "0-0", true
	caughtUp, last, after := false, "", "0-0"
	backoff := time.Duration(0)
	for ctx.Err() == nil {
		err := cl.redeliverDue(ctx)
		cl.s.Lock()
		if !cl.s.ActiveLocked() {
			cl.s.Unlock()
			return
		}
		room := cl.roomLocked()
		due := cl.nextDueLocked(time.Now())
		cl.s.Unlock()

		if err == nil && room > 0 && !caughtUp {
			limit := min(room, opts.BatchSize)
			if scanning {
				var seen string
				cursor, seen, err = cl.claimPending(ctx, cursor, limit)
				scanning = err != nil || cursor != "0-0"
				if err == nil {
					after = laterID(after, seen)
					backoff = 0
					continue
				}
			} else {
				var (
					n    int
					seen string
				)
				n, seen, last, err = cl.readNew(ctx, limit, after)
				if err == nil {
					after = laterID(after, seen)
					backoff = 0
					caughtUp = n < limit
					continue
				}
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

		wait := opts.MaxWait
		if due > 0 {
			wait = min(wait, due)
		}
		if room <= 0 {
			cl.sleep(ctx, wait) // until acks make room, or a nack is due
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
			Block:   wait,
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

// takeAcksLocked takes the buffered acks and nacks.
func (cl *Claim) takeAcksLocked() ([]string, []nackHint) {
	acks, nacks := cl.acks, cl.nacks
	cl.acks, cl.nacks = nil, nil
	return acks, nacks
}

// restoreAcks puts acks and nacks that could not be sent back in front.
func (cl *Claim) restoreAcks(acks []string, nacks []nackHint) {
	cl.s.Lock()
	defer cl.s.Unlock()
	if cl.s.HoldsLocked() {
		cl.acks = append(acks, cl.acks...)
		cl.nacks = append(nacks, cl.nacks...)
	}
}

// readNew sends the buffered acks and nacks and reads up to limit
// entries: the owner's pending entries after the entry ID after (read by a
// call whose reply was lost), then new ones. It returns how many it looked
// at, the ID of the last of them ("" when none), and, when fewer than
// limit, the ID after which to wait for more.
func (cl *Claim) readNew(ctx context.Context, limit int, after string) (n int, seen, last string, err error) {
	cl.flushMu.Lock()
	defer cl.flushMu.Unlock()
	cl.s.Lock()
	if !cl.s.ActiveLocked() {
		cl.s.Unlock()
		return 0, "", "", nil
	}
	acks, nacks := cl.takeAcksLocked()
	cl.s.Unlock()
	args := make([]any, 0, 7+len(acks)+2*len(nacks))
	args = append(args, cl.lease, group, cl.c.opts.Owner, limit, after)
	args = appendSettle(args, acks, nacks)
	res, err := readScript.Run(ctx, cl.c.m.client, cl.keys, args...).Result()
	if err != nil {
		// The script may have run: its acks are sent again (harmless),
		// and what it read is served by the next read, from after.
		cl.restoreAcks(acks, nacks)
		return 0, "", "", cl.c.m.failed(err)
	}
	reply, ok := res.([]any)
	if !ok {
		return 0, "", "", errLost
	}
	if len(reply) < 5 {
		return 0, "", "", nil
	}
	raw := toSlice(reply[1])
	entries := make([]got, 0, len(raw))
	for _, r := range raw {
		deliveries := 1
		if e := toSlice(r); len(e) == 3 {
			deliveries = int(toInt(e[2]))
		}
		msg, id, err := decodeEntry(r, cl.c.m.name, cl.partition, deliveries)
		if err != nil {
			return 0, "", "", fmt.Errorf("read partition %d: %w", cl.partition, err)
		}
		entries = append(entries, got{msg: msg, entryID: id})
	}
	seen, _ = reply[3].(string)
	last, _ = reply[4].(string)
	cl.dispatch(entries)
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
	next, _ = reply[0].(string)
	raw := toSlice(reply[1])
	entries := make([]got, 0, len(raw))
	for _, r := range raw {
		e := toSlice(r)
		if len(e) != 4 {
			return cursor, "", fmt.Errorf("claim pending entries: unexpected reply %v", r)
		}
		msg, id, err := decodeEntry(e, cl.c.m.name, cl.partition, int(toInt(e[2])))
		if err != nil {
			return cursor, "", fmt.Errorf("claim pending entries of partition %d: %w", cl.partition, err)
		}
		entries = append(entries, got{msg: msg, entryID: id, wait: time.Duration(toInt(e[3])) * time.Millisecond})
		seen = id
	}
	cl.dispatch(entries)
	return next, seen, nil
}

// redeliverDue hands out held messages that may go, claiming nacked ones
// again (which counts a delivery) once their delay has passed.
func (cl *Claim) redeliverDue(ctx context.Context) error {
	cl.s.Lock()
	if !cl.s.ActiveLocked() || cl.nHeld == 0 {
		cl.s.Unlock()
		return nil
	}
	claim := cl.releaseDueLocked(time.Now())
	cl.s.Unlock()
	for len(claim) > 0 {
		chunk := claim[:min(len(claim), redeliverChunk)]
		claim = claim[len(chunk):]
		args := make([]any, 0, 3+len(chunk))
		args = append(args, cl.lease, group, cl.c.opts.Owner)
		for _, h := range chunk {
			args = append(args, h.entryID)
		}
		res, err := redeliverScript.Run(ctx, cl.c.m.client, cl.keys, args...).Result()
		if err != nil {
			return cl.c.m.failed(err)
		}
		reply, ok := res.([]any)
		if !ok || len(reply) != 2 {
			return errLost
		}
		counts := make(map[string]int)
		for _, r := range toSlice(reply[1]) {
			e := toSlice(r)
			if len(e) == 3 {
				id, _ := e[0].(string)
				counts[id] = int(toInt(e[2]))
			}
		}
		cl.s.Lock()
		if !cl.s.ActiveLocked() {
			cl.s.Unlock()
			return nil
		}
		for _, h := range chunk {
			if d, ok := counts[h.entryID]; ok {
				h.claimed = true
				h.msg.Deliveries = d
				continue
			}
			// Gone from the stream: nothing to deliver.
			addr := h.msg.Address.String()
			q := cl.holding[addr]
			if i := slices.Index(q, h); i >= 0 {
				q = slices.Delete(q, i, i+1)
				cl.nHeld--
			}
			if len(q) == 0 {
				delete(cl.holding, addr)
			} else {
				cl.holding[addr] = q
			}
		}
		cl.s.Unlock()
	}
	cl.s.Lock()
	if cl.s.ActiveLocked() {
		cl.releaseDueLocked(time.Now())
	}
	cl.s.Unlock()
	return nil
}

// sendAcks runs the ack script; release drops the lease too. It reports
// whether the lease was still the claim's.
func (cl *Claim) sendAcks(ctx context.Context, acks []string, nacks []nackHint, release bool) (bool, error) {
	res, err := ackScript.Run(ctx, cl.c.m.client, cl.keys, cl.ackArgs(acks, nacks, release)...).Int64()
	if err != nil {
		return false, cl.c.m.failed(err)
	}
	return res == 1, nil
}

// ackArgs are the ack script's arguments.
func (cl *Claim) ackArgs(acks []string, nacks []nackHint, release bool) []any {
	rel := "0"
	if release {
		rel = "1"
	}
	args := make([]any, 0, 5+len(acks)+2*len(nacks))
	args = append(args, cl.lease, group, rel)
	return appendSettle(args, acks, nacks)
}

// appendSettle appends nacks and acks as the scripts' settle takes them.
func appendSettle(args []any, acks []string, nacks []nackHint) []any {
	now := time.Now()
	args = append(args, len(nacks))
	for _, n := range nacks {
		args = append(args, n.entryID, max(n.readyAt.Sub(now), 0).Milliseconds())
	}
	args = append(args, len(acks))
	for _, id := range acks {
		args = append(args, id)
	}
	return args
}

// Ack acknowledges delivered messages of this claim. The acks are buffered
// and become durable with the next read or flush (within AckInterval) or
// Release; until then a crash redelivers them. Acks after Lost are ignored;
// acking a message that is not outstanding (already acked or nacked) does
// nothing.
func (cl *Claim) Ack(_ context.Context, msgs ...channel.Message) error {
	cl.s.Lock()
	wasFull := cl.roomLocked() <= 0
	for _, m := range msgs {
		if ignore, err := cl.s.SettleLocked("ack", m); ignore {
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

// Nack hands msg back: it is delivered again, with Deliveries one higher,
// once delay has passed (up to MaxWait later), and the later messages of
// its address that have not been handed out yet wait for it. Messages of
// that address already handed out are not recalled. The entry stays in the
// claim's pending list meanwhile; the time it may come back is recorded in
// Redis with the next flush, so a new owner of the partition waits for it
// too.
func (cl *Claim) Nack(_ context.Context, msg channel.Message, delay time.Duration) error {
	cl.s.Lock()
	defer cl.s.Unlock()
	if ignore, err := cl.s.SettleLocked("nack", msg); ignore {
		return err
	}
	id, ok := cl.inflight[msg.Offset]
	if !ok {
		return nil
	}
	delete(cl.inflight, msg.Offset)
	readyAt := time.Now().Add(max(delay, 0))
	if cl.s.ActiveLocked() {
		cl.holdLocked(&held{msg: msg, entryID: id, nacked: true, readyAt: readyAt})
	}
	if delay > 0 {
		cl.nacks = append(cl.nacks, nackHint{entryID: id, readyAt: readyAt})
	}
	cl.kick()
	return nil
}

// Release closes Messages, makes the buffered acks and nacks durable and
// drops the lease, in one script call, so another consumer can take the
// partition at once. Messages delivered and not acked are redelivered to
// the next owner. If the lease turns out to be lost, nothing is applied and
// Lost is closed. After Lost, Release only closes the claim. Release is
// idempotent; when it fails (ctx ended, Redis error) it may be called
// again.
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
	acks, nacks := cl.takeAcksLocked()
	cl.s.Unlock()
	ok, err := cl.sendAcks(ctx, acks, nacks, true)
	cl.flushMu.Unlock()

	cl.s.EndRelease(err, ok)
	cl.kick()
	if err != nil {
		cl.restoreAcks(acks, nacks)
		return fmt.Errorf("redis: release partition %d: %w", cl.partition, err)
	}
	return nil
}
