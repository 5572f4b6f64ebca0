package memory_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/postbox-dev/postbox/channel"
	"github.com/postbox-dev/postbox/channel/channeltest"
	"github.com/postbox-dev/postbox/channel/memory"
)

// These tests run in synctest bubbles: synctest.Wait returns once every
// goroutine is blocked, so the state they check has settled, and time
// moves only when everything waits for it.

// bubble runs test in a synctest bubble, with a mailbox of opts that is
// closed when the test ends.
func bubble(t *testing.T, opts memory.Options, test func(t *testing.T, mb *memory.Mailbox)) {
	t.Helper()
	synctest.Test(t, func(t *testing.T) { test(t, newMailbox(t, opts)) })
}

// worker runs a consumer as a host does: each claim is read until Messages
// closes (then released) or Lost closes (then abandoned), and every
// delivery is recorded and passed to handle.
type worker struct {
	t      *testing.T
	name   string
	c      *memory.Consumer
	handle func(cl channel.Claim, m channel.Message)
	// noRelease: after Messages closes, wait for Lost instead of releasing.
	noRelease bool

	cancel  context.CancelFunc
	done    chan error
	once    sync.Once
	err     error // Run's result
	crashed bool

	mu      sync.Mutex
	got     []delivery
	claims  []channel.Claim
	current map[int32]channel.Claim
}

type delivery struct {
	channel.Message
	claim channel.Claim
	at    time.Time
}

// ackAll is the default handling: ack at once.
func ackAll(cl channel.Claim, m channel.Message) { _ = cl.Ack(context.Background(), m) }

// ackNone leaves every message unacked.
func ackNone(channel.Claim, channel.Message) {}

// startWorker runs a worker on a new consumer of mb. When the test ends,
// the worker is stopped, and its Run must have returned nil, or ErrCrashed
// after crash.
func startWorker(t *testing.T, mb *memory.Mailbox, name string, handle func(channel.Claim, channel.Message)) *worker {
	ctx, cancel := context.WithCancel(context.Background())
	w := &worker{t: t, name: name, c: mb.Consumer(), handle: handle, cancel: cancel, done: make(chan error, 1), current: make(map[int32]channel.Claim)}
	go func() { w.done <- w.c.Run(ctx, w.onClaim) }()
	t.Cleanup(func() {
		var want error
		if w.crashed {
			want = memory.ErrCrashed
		}
		if err := w.stop(); !errors.Is(err, want) {
			t.Errorf("%s: Run = %v, want %v", w.name, err, want)
		}
	})
	return w
}

func (w *worker) onClaim(cl channel.Claim) {
	w.mu.Lock()
	w.claims = append(w.claims, cl)
	w.current[cl.Partition()] = cl
	w.mu.Unlock()
	defer func() {
		w.mu.Lock()
		if w.current[cl.Partition()] == cl {
			delete(w.current, cl.Partition())
		}
		w.mu.Unlock()
	}()
	for {
		select {
		case m, ok := <-cl.Messages():
			if !ok {
				select {
				case <-cl.Lost():
					return
				default:
				}
				if w.noRelease {
					<-cl.Lost()
					return
				}
				if err := cl.Release(context.Background()); err != nil {
					w.t.Errorf("%s: release: %v", w.name, err)
				}
				return
			}
			w.mu.Lock()
			w.got = append(w.got, delivery{Message: m, claim: cl, at: time.Now()})
			w.mu.Unlock()
			w.handle(cl, m)
		case <-cl.Lost():
			return
		}
	}
}

// received returns the deliveries so far, optionally only those of claim
// cl.
func (w *worker) received(cl channel.Claim) []delivery {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []delivery
	for _, d := range w.got {
		if cl == nil || d.claim == cl {
			out = append(out, d)
		}
	}
	return out
}

func (w *worker) claimsSeen() []channel.Claim {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.claims)
}

// claimOf returns the newest claim of partition p the worker got.
func (w *worker) claimOf(p int32) channel.Claim {
	w.t.Helper()
	cls := w.claimsSeen()
	for i := len(cls) - 1; i >= 0; i-- {
		if cls[i].Partition() == p {
			return cls[i]
		}
	}
	w.t.Fatalf("%s got no claim of partition %d", w.name, p)
	return nil
}

// owned returns the partitions the worker is working on, ascending.
func (w *worker) owned() []int32 {
	w.mu.Lock()
	defer w.mu.Unlock()
	var ps []int32
	for p := range w.current {
		ps = append(ps, p)
	}
	slices.Sort(ps)
	return ps
}

// stop cancels Run and returns its result. It may be called again.
func (w *worker) stop() error {
	w.cancel()
	return w.result()
}

// result waits for Run to return and returns its result.
func (w *worker) result() error {
	w.once.Do(func() { w.err = <-w.done })
	return w.err
}

// crash crashes the worker's consumer (Consumer.Crash).
func (w *worker) crash() {
	w.crashed = true
	w.c.Crash()
}

func publishN(t *testing.T, mb *memory.Mailbox, p int32, n int, prefix string) []channel.Message {
	t.Helper()
	var msgs []channel.Message
	for i := range n {
		msgs = append(msgs, channel.Message{
			Address: channeltest.AddressOn(t, fmt.Sprintf("%s%d", prefix, i%3), p, mb.Partitions()),
			Payload: fmt.Appendf(nil, "%s-%d", prefix, i),
		})
	}
	pub := mb.Publisher()
	if err := pub.Publish(context.Background(), msgs...); err != nil {
		t.Fatalf("publish: %v", err)
	}
	return msgs
}

// project returns f of each of ds.
func project[T any](ds []delivery, f func(delivery) T) []T {
	out := make([]T, len(ds))
	for i, d := range ds {
		out[i] = f(d)
	}
	return out
}

func messages(ds []delivery) []channel.Message {
	return project(ds, func(d delivery) channel.Message { return d.Message })
}

func offsets(ds []delivery) []int64 { return project(ds, func(d delivery) int64 { return d.Offset }) }

func ids(ds []delivery) []string { return project(ds, func(d delivery) string { return d.ID }) }

// onPartition returns the deliveries of ds from partition p.
func onPartition(ds []delivery, p int32) []delivery {
	return slices.DeleteFunc(slices.Clone(ds), func(d delivery) bool { return d.Partition != p })
}

// receipts returns, for each of ids, how many times it occurs in ds: how
// often that message was received. IDs are unique per message, and stay
// the same when one is delivered again.
func receipts(ds []delivery, ids []string) []int {
	n := make(map[string]int)
	for _, d := range ds {
		n[d.ID]++
	}
	out := make([]int, len(ids))
	for i, id := range ids {
		out[i] = n[id]
	}
	return out
}

// want returns n copies of v.
func want(n, v int) []int { return slices.Repeat([]int{v}, n) }

// checkRedelivered checks that again, what the claim after the one that
// delivered first got, is first but its acked first messages, in order and
// at offsets wantOffsets, and that w received each acked message once and
// the others twice.
func checkRedelivered(t *testing.T, w *worker, first, again []delivery, acked int, wantOffsets []int64) {
	t.Helper()
	if got := offsets(again); !slices.Equal(got, wantOffsets) {
		t.Fatalf("the next claim got offsets %v, want the unacked %v in order", got, wantOffsets)
	}
	if got := ids(again); !slices.Equal(got, ids(first[acked:])) {
		t.Errorf("redelivered IDs %v, want %v", got, ids(first[acked:]))
	}
	if got := receipts(w.received(nil), ids(first)); !slices.Equal(got, append(want(acked, 1), want(len(first)-acked, 2)...)) {
		t.Errorf("the first claim's messages were received %v times, want the %d acked once and the rest twice", got, acked)
	}
}

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

func TestRevokeRedeliversFromLowestUnacked(t *testing.T) {
	bubble(t, memory.Options{Partitions: 1}, func(t *testing.T, mb *memory.Mailbox) {
		// Ack offsets 1 and 2 only, as a host whose watermark
		// stuck at 3.
		w := startWorker(t, mb, "w", func(cl channel.Claim, m channel.Message) {
			if m.Offset <= 2 {
				ackAll(cl, m)
			}
		})
		publishN(t, mb, 0, 5, "rev")
		synctest.Wait()

		first := w.received(nil)
		if got := offsets(first); !slices.Equal(got, []int64{1, 2, 3, 4, 5}) {
			t.Fatalf("first claim got offsets %v, want 1..5", got)
		}
		if got := receipts(first, ids(first)); !slices.Equal(got, want(5, 1)) {
			t.Errorf("first claim received each message %v times, want once", got)
		}
		if got, wantIDs := mb.Acked(0), ids(first[:2]); !slices.Equal(got, wantIDs) {
			t.Errorf("Acked(0) = %v, want %v", got, wantIDs)
		}
		if mb.Pending() != 3 {
			t.Errorf("Pending = %d, want 3", mb.Pending())
		}

		old := w.claimsSeen()[0]
		if !mb.Revoke(0) {
			t.Fatal("Revoke(0) = false with an active claim")
		}
		synctest.Wait()
		if isClosed(old.Lost()) {
			t.Error("a revoked claim that was released is marked lost")
		}
		cls := w.claimsSeen()
		if len(cls) != 2 {
			t.Fatalf("%d claims after Revoke and Release, want 2", len(cls))
		}
		checkRedelivered(t, w, first, w.received(cls[1]), 2, []int64{3, 4, 5})
	})
}

func TestRevokeLosesClaimNotReleasedInTime(t *testing.T) {
	bubble(t, memory.Options{Partitions: 1, ReleaseTimeout: 5 * time.Second}, func(t *testing.T, mb *memory.Mailbox) {
		w := startWorker(t, mb, "w", ackNone)
		w.noRelease = true
		publishN(t, mb, 0, 2, "slow")
		synctest.Wait()
		old := w.claimsSeen()[0]
		mb.Revoke(0)
		time.Sleep(5*time.Second - time.Nanosecond)
		synctest.Wait()
		if isClosed(old.Lost()) || len(w.claimsSeen()) != 1 {
			t.Fatalf("claim lost or partition moved before ReleaseTimeout")
		}
		time.Sleep(time.Nanosecond)
		synctest.Wait()
		if !isClosed(old.Lost()) {
			t.Fatal("a revoked claim not released within ReleaseTimeout is not lost")
		}
		cls := w.claimsSeen()
		if len(cls) != 2 {
			t.Fatalf("%d claims, want the partition claimed again", len(cls))
		}
		checkRedelivered(t, w, w.received(old), w.received(cls[1]), 0, []int64{1, 2})
		if err := old.Ack(context.Background(), w.received(old)[0].Message); err != nil {
			t.Errorf("ack after Lost: %v, want it ignored without error", err)
		}
		if mb.Pending() != 2 || len(mb.Acked(0)) != 0 {
			t.Errorf("after an ack on a lost claim: Pending %d, Acked %v; want 2 and none", mb.Pending(), mb.Acked(0))
		}
	})
}

func TestLoseIgnoresLaterAcks(t *testing.T) {
	bubble(t, memory.Options{Partitions: 2}, func(t *testing.T, mb *memory.Mailbox) {
		w := startWorker(t, mb, "w", ackNone)
		publishN(t, mb, 1, 4, "lose")
		synctest.Wait()
		old := w.claimOf(1)
		first := w.received(old)
		if err := old.Ack(context.Background(), first[0].Message); err != nil {
			t.Fatal(err)
		}

		if !mb.Lose(1) {
			t.Fatal("Lose(1) = false with a claim")
		}
		// At once, before anyone reacts.
		if !isClosed(old.Lost()) {
			t.Fatal("Lost not closed by Lose")
		}
		if _, ok := <-old.Messages(); ok {
			t.Error("Messages still open after Lose")
		}
		if err := old.Ack(context.Background(), messages(first[1:])...); err != nil {
			t.Errorf("ack after Lost: %v, want it ignored without error", err)
		}
		if got := mb.Acked(1); !slices.Equal(got, ids(first[:1])) {
			t.Errorf("Acked(1) = %v, want only the ack before Lose %v", got, ids(first[:1]))
		}
		synctest.Wait()

		again := w.received(w.claimOf(1))
		checkRedelivered(t, w, first, again, 1, []int64{2, 3, 4})
		if err := again[0].claim.Ack(context.Background(), again[0].Message); err != nil {
			t.Fatal(err)
		}
		if got := mb.Acked(1); !slices.Equal(got, ids(first[:2])) {
			t.Errorf("Acked(1) = %v, want %v", got, ids(first[:2]))
		}
		if err := old.Release(context.Background()); err != nil {
			t.Errorf("Release after Lost: %v, want nil", err)
		}
	})
}

func TestCrashMovesPartitionsAtOnce(t *testing.T) {
	bubble(t, memory.Options{Partitions: 4}, func(t *testing.T, mb *memory.Mailbox) {
		a := startWorker(t, mb, "A", ackAll)
		synctest.Wait()
		b := startWorker(t, mb, "B", ackNone)
		synctest.Wait()
		if got, got2 := a.owned(), b.owned(); !slices.Equal(got, []int32{0, 1}) || !slices.Equal(got2, []int32{2, 3}) {
			t.Fatalf("A owns %v and B %v, want [0 1] and [2 3]", got, got2)
		}
		for p := range int32(4) {
			publishN(t, mb, p, 3, fmt.Sprintf("crash%d-", p))
		}
		synctest.Wait()
		bGot := b.received(nil)
		if len(bGot) != 6 {
			t.Fatalf("B received %d messages, want 6", len(bGot))
		}
		bClaims := b.claimsSeen()

		b.crash()
		for _, cl := range bClaims {
			if !isClosed(cl.Lost()) {
				t.Errorf("partition %d: B's claim not lost at once on Crash", cl.Partition())
			}
		}
		// B's late acks, as from a process that died mid-flight.
		for _, d := range bGot {
			if err := d.claim.Ack(context.Background(), d.Message); err != nil {
				t.Errorf("ack on a crashed consumer's claim: %v, want it ignored", err)
			}
		}
		synctest.Wait()
		if err := b.result(); !errors.Is(err, memory.ErrCrashed) {
			t.Errorf("crashed consumer's Run = %v, want ErrCrashed", err)
		}
		if got := a.owned(); !slices.Equal(got, []int32{0, 1, 2, 3}) {
			t.Errorf("after B crashed A owns %v, want all", got)
		}
		if len(b.claimsSeen()) != len(bClaims) {
			t.Errorf("B got claims after it crashed")
		}
		for p := int32(2); p < 4; p++ {
			got, had := onPartition(a.received(nil), p), onPartition(bGot, p)
			if o := offsets(got); !slices.Equal(o, []int64{1, 2, 3}) {
				t.Errorf("partition %d: A got offsets %v after the crash, want 1, 2, 3", p, o)
			}
			if !slices.Equal(ids(got), ids(had)) || !slices.Equal(offsets(had), []int64{1, 2, 3}) {
				t.Errorf("partition %d: A got %v after the crash, want what B had at offsets 1, 2, 3: %v at %v", p, ids(got), ids(had), offsets(had))
			}
			if n, m := receipts(bGot, ids(got)), receipts(a.received(nil), ids(got)); !slices.Equal(n, want(3, 1)) || !slices.Equal(m, want(3, 1)) {
				t.Errorf("partition %d: B received its messages %v times and A %v, want once each: two deliveries in all", p, n, m)
			}
			if acked := mb.Acked(p); !slices.Equal(acked, ids(got)) {
				t.Errorf("partition %d: Acked %v, want A's acks only %v", p, acked, ids(got))
			}
		}
		if mb.Pending() != 0 {
			t.Errorf("Pending = %d, want 0", mb.Pending())
		}
	})
}

func TestReleaseWithoutRevokeReclaims(t *testing.T) {
	bubble(t, memory.Options{Partitions: 1}, func(t *testing.T, mb *memory.Mailbox) {
		w := startWorker(t, mb, "w", ackNone)
		publishN(t, mb, 0, 3, "rel")
		synctest.Wait()
		old := w.claimsSeen()[0]
		if err := old.Ack(context.Background(), w.received(old)[0].Message); err != nil {
			t.Fatal(err)
		}
		if err := old.Release(context.Background()); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		cls := w.claimsSeen()
		if len(cls) != 2 {
			t.Fatalf("%d claims after a Release nothing asked for, want the partition claimed again", len(cls))
		}
		if got := offsets(w.received(cls[1])); !slices.Equal(got, []int64{2, 3}) {
			t.Errorf("new claim got offsets %v, want 2, 3", got)
		}
		if err := old.Ack(context.Background(), w.received(old)[1].Message); err == nil {
			t.Error("ack after Release: nil, want an error")
		}
	})
}

// TestSplitIsStickyAndDeterministic pins down the assignment: shares by
// creation order, partitions staying where they are when they can.
func TestSplitIsStickyAndDeterministic(t *testing.T) {
	bubble(t, memory.Options{Partitions: 8}, func(t *testing.T, mb *memory.Mailbox) {
		var ws []*worker
		for _, name := range []string{"A", "B", "C"} {
			ws = append(ws, startWorker(t, mb, name, ackAll))
			synctest.Wait()
		}
		check := func(when string, ws []*worker, want [][]int32) {
			t.Helper()
			for i, w := range ws {
				if got := w.owned(); !slices.Equal(got, want[i]) {
					t.Errorf("%s: %s owns %v, want %v", when, w.name, got, want[i])
				}
			}
		}
		check("three consumers", ws, [][]int32{{0, 1, 2}, {4, 5, 6}, {3, 7}})
		if err := ws[0].stop(); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		check("A stopped", ws[1:], [][]int32{{0, 4, 5, 6}, {1, 2, 3, 7}})
	})
}

func TestBufferBoundsUnacked(t *testing.T) {
	bubble(t, memory.Options{Partitions: 1, Buffer: 2}, func(t *testing.T, mb *memory.Mailbox) {
		w := startWorker(t, mb, "w", ackNone)
		publishN(t, mb, 0, 5, "buf")
		synctest.Wait()
		got := w.received(nil)
		if len(got) != 2 {
			t.Fatalf("%d delivered with Buffer 2 and no acks, want 2", len(got))
		}
		if err := got[0].claim.Ack(context.Background(), got[0].Message); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		if got := offsets(w.received(nil)); !slices.Equal(got, []int64{1, 2, 3}) {
			t.Errorf("after one ack delivered %v, want 1, 2, 3", got)
		}
	})
}

func TestPublishAssignsPositionsAndCopies(t *testing.T) {
	bubble(t, memory.Options{Name: "box", Partitions: 2}, func(t *testing.T, mb *memory.Mailbox) {
		a0 := channeltest.AddressOn(t, "pos", 0, 2)
		a1 := channeltest.AddressOn(t, "pos", 1, 2)
		payload := []byte("original")
		headers := map[string]string{"k": "v"}
		pub := mb.Publisher()
		err := pub.Publish(context.Background(),
			channel.Message{Address: a0, Payload: payload, Headers: headers},
			channel.Message{Address: a1, ID: "given"},
			channel.Message{Address: a0})
		if err != nil {
			t.Fatal(err)
		}
		copy(payload, "mutated!")
		headers["k"] = "changed"

		w := startWorker(t, mb, "w", ackAll)
		synctest.Wait()
		byID := make(map[string]delivery)
		for _, d := range w.received(nil) {
			byID[d.ID] = d
		}
		for id, want := range map[string]struct {
			p   int32
			off int64
		}{"box/0/1": {0, 1}, "given": {1, 1}, "box/0/2": {0, 2}} {
			d, ok := byID[id]
			if !ok {
				t.Errorf("no message with ID %s (got %v)", id, ids(w.received(nil)))
				continue
			}
			if d.Partition != want.p || d.Offset != want.off || d.Mailbox != "box" || !d.PublishedAt.Equal(time.Now()) {
				t.Errorf("%s at partition %d offset %d of %q published %v, want %d, %d, box, now", id, d.Partition, d.Offset, d.Mailbox, d.PublishedAt, want.p, want.off)
			}
		}
		if d := byID["box/0/1"]; string(d.Payload) != "original" || d.Headers["k"] != "v" {
			t.Errorf("delivered %q %v, want the payload and headers as published", d.Payload, d.Headers)
		}

		bad := []channel.Message{{Address: a0, Payload: []byte("x")}, {Address: a1, ID: "bad\x00id"}}
		if err := pub.Publish(context.Background(), bad...); !errors.Is(err, channel.ErrBadMessageID) {
			t.Errorf("Publish with a NUL in an ID: %v, want ErrBadMessageID", err)
		}
		if err := pub.Publish(context.Background(), channel.Message{Address: channel.Address{Type: "a/b", ID: "c"}}); !errors.Is(err, channel.ErrBadAddress) {
			t.Errorf("Publish to a type with a slash: %v, want ErrBadAddress", err)
		}
		synctest.Wait()
		if n := len(w.received(nil)); n != 3 || mb.Pending() != 0 {
			t.Errorf("after rejected batches: %d delivered, %d pending; want 3 and 0", n, mb.Pending())
		}
	})
}

func TestInjectSkipsTheChecks(t *testing.T) {
	bubble(t, memory.Options{Name: "box", Partitions: 1}, func(t *testing.T, mb *memory.Mailbox) {
		raw := []channel.Message{
			{ID: "no-address", Payload: []byte("p")},
			{ID: "bad\xffid", Address: channel.Address{Type: "t", ID: "a\x00b"}},
			{Address: channel.Address{Type: "t", ID: "x"}},
		}
		if err := mb.Inject(raw...); err != nil {
			t.Fatal(err)
		}
		w := startWorker(t, mb, "w", ackAll)
		synctest.Wait()
		got := w.received(nil)
		if len(got) != 3 || got[0].ID != raw[0].ID || got[0].Address != (channel.Address{}) ||
			got[1].ID != raw[1].ID || got[1].Address != raw[1].Address || got[2].ID != "box/0/3" {
			t.Errorf("injected %+v, delivered %+v", raw, got)
		}
		if err := w.stop(); err != nil {
			t.Errorf("Run: %v", err)
		}
		mb.Close()
		if err := mb.Inject(raw[0]); !errors.Is(err, channel.ErrClosed) {
			t.Errorf("Inject after Close: %v, want ErrClosed", err)
		}
	})
}

func TestAckOnAnotherPartitionFails(t *testing.T) {
	bubble(t, memory.Options{Partitions: 2}, func(t *testing.T, mb *memory.Mailbox) {
		w := startWorker(t, mb, "w", ackNone)
		publishN(t, mb, 0, 1, "p0")
		synctest.Wait()
		d := w.received(nil)[0]
		var other channel.Claim
		for _, cl := range w.claimsSeen() {
			if cl.Partition() != d.Partition {
				other = cl
			}
		}
		if err := other.Ack(context.Background(), d.Message); err == nil {
			t.Error("ack on the claim of another partition: nil, want an error")
		}
	})
}

// TestAcksBehindAStuckMessage acks everything but the first message, so
// that acked records pile up behind it and are swept out of the log, and
// checks that only the stuck one comes back.
func TestAcksBehindAStuckMessage(t *testing.T) {
	for _, forget := range []bool{false, true} {
		t.Run(fmt.Sprintf("ForgetAcked=%v", forget), func(t *testing.T) {
			bubble(t, memory.Options{Partitions: 1, ForgetAcked: forget}, func(t *testing.T, mb *memory.Mailbox) {
				// Ack each message but offset 1 on its first delivery.
				var (
					mu   sync.Mutex
					seen = make(map[string]bool)
				)
				w := startWorker(t, mb, "w", func(cl channel.Claim, m channel.Message) {
					mu.Lock()
					again := seen[m.ID]
					seen[m.ID] = true
					mu.Unlock()
					if m.Offset != 1 && !again {
						ackAll(cl, m)
					}
				})
				publishN(t, mb, 0, 300, "stuck")
				synctest.Wait()
				if mb.Pending() != 1 {
					t.Fatalf("Pending = %d, want 1", mb.Pending())
				}
				if n := len(mb.Acked(0)); (forget && n != 0) || (!forget && n != 299) {
					t.Errorf("Acked(0) holds %d IDs, want %d", n, map[bool]int{false: 299, true: 0}[forget])
				}
				mb.Revoke(0)
				synctest.Wait()
				cls := w.claimsSeen()
				if got := offsets(w.received(cls[len(cls)-1])); !slices.Equal(got, []int64{1}) {
					t.Errorf("after Revoke the new claim got offsets %v, want only the stuck 1", got)
				}
				publishN(t, mb, 0, 1, "after")
				synctest.Wait()
				if got := offsets(w.received(cls[len(cls)-1])); !slices.Equal(got, []int64{1, 301}) {
					t.Errorf("then offsets %v, want 1, 301", got)
				}
			})
		})
	}
}

// TestReleasedPartitionWaitsForOnClaim checks the handoff after a Release:
// the partition is claimed again when the released claim's onClaim
// returns, or after ReleaseTimeout if it keeps running.
func TestReleasedPartitionWaitsForOnClaim(t *testing.T) {
	const timeout = 5 * time.Second
	bubble(t, memory.Options{Partitions: 1, ReleaseTimeout: timeout}, func(t *testing.T, mb *memory.Mailbox) {
		holds := []chan struct{}{make(chan struct{}), make(chan struct{}), make(chan struct{})}
		var (
			mu     sync.Mutex
			claims []channel.Claim
		)
		seen := func() int {
			mu.Lock()
			defer mu.Unlock()
			return len(claims)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() {
			done <- mb.Consumer().Run(ctx, func(cl channel.Claim) {
				mu.Lock()
				claims = append(claims, cl)
				hold := holds[min(len(claims), len(holds))-1]
				mu.Unlock()
				if err := cl.Release(context.Background()); err != nil {
					t.Errorf("release: %v", err)
				}
				<-hold
			})
		}()
		synctest.Wait()
		if n := seen(); n != 1 {
			t.Fatalf("%d claims while the released claim's onClaim runs, want 1", n)
		}
		close(holds[0])
		synctest.Wait()
		if n := seen(); n != 2 {
			t.Fatalf("%d claims after the released claim's onClaim returned, want 2", n)
		}
		time.Sleep(timeout - time.Nanosecond)
		synctest.Wait()
		if n := seen(); n != 2 {
			t.Fatalf("%d claims before ReleaseTimeout, want 2", n)
		}
		time.Sleep(time.Nanosecond)
		synctest.Wait()
		if n := seen(); n != 3 {
			t.Fatalf("%d claims after ReleaseTimeout with onClaim still running, want 3", n)
		}
		cancel()
		close(holds[1])
		close(holds[2])
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
}
