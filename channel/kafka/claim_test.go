package kafka

import (
	"context"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/postbox-dev/postbox/channel"
	"github.com/postbox-dev/postbox/internal/waitfor"
)

// newTestClaim returns a claim outside any consumer group, with its pump
// running, fed by push. The client never connects.
func newTestClaim(t *testing.T, bufferSize int) *claim {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers("127.0.0.1:1"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	s := &session{topic: "mb", opts: Options{BufferSize: bufferSize}.WithDefaults()}
	c := newClaim(s, cl, 0)
	go c.pump()
	go c.forward()
	t.Cleanup(func() {
		c.stopDelivery()
		<-c.fwdDone
	})
	return c
}

func testMsg(addr string, off int64) channel.Message {
	a, _ := channel.ParseAddress(addr)
	return channel.Message{ID: addr + "#" + string(rune('0'+off)), Address: a, Mailbox: "mb", Offset: off}
}

func recv(t *testing.T, c *claim, timeout time.Duration) channel.Message {
	t.Helper()
	select {
	case m, ok := <-c.Messages():
		if !ok {
			t.Fatal("Messages closed")
		}
		return m
	case <-time.After(timeout):
		t.Fatalf("no message within %v", timeout)
	}
	panic("unreachable")
}

func TestClaimHandsOutInOffsetOrder(t *testing.T) {
	c := newTestClaim(t, 100)
	c.push([]channel.Message{testMsg("a/1", 0), testMsg("b/1", 1), testMsg("a/1", 2)}, nil)
	for _, want := range []int64{0, 1, 2} {
		if m := recv(t, c, time.Second); m.Offset != want {
			t.Fatalf("got offset %d, want %d", m.Offset, want)
		}
	}
	// The pump waits for the next fetch.
	c.push([]channel.Message{testMsg("b/1", 3), testMsg("a/1", 4)}, nil)
	if m := recv(t, c, time.Second); m.Offset != 3 {
		t.Fatalf("got offset %d, want 3", m.Offset)
	}
	// Stopping delivery closes Messages with offset 4 in the pump's hand.
	waitfor.Until(t, time.Second, "the pump takes offset 4", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return len(c.pending) == 0
	})
	c.stopDelivery()
	for m := range c.Messages() {
		if m.Offset != 4 {
			t.Fatalf("got offset %d after delivery stopped", m.Offset)
		}
	}
}

func TestClaimPausesWhenFullAndResumesWhenDrained(t *testing.T) {
	c := newTestClaim(t, 4)
	paused := func() bool {
		return len(c.cl.PauseFetchPartitions(nil)["mb"]) == 1
	}
	var msgs []channel.Message
	for i := range int64(6) {
		msgs = append(msgs, testMsg("a/1", i))
	}
	c.push(msgs, nil)
	if !paused() {
		t.Fatal("6 messages on a claim of 4: fetching is not paused")
	}
	// One is in the pump's hand; taking 3 more leaves 2 = BufferSize/2.
	for i := range int64(3) {
		if m := recv(t, c, time.Second); m.Offset != i {
			t.Fatalf("got %d, want %d", m.Offset, i)
		}
	}
	waitfor.Until(t, time.Second, "fetching resumes", func() bool { return !paused() })
}

func TestClaimAckAndStates(t *testing.T) {
	c := newTestClaim(t, 10)
	ctx := context.Background()
	if err := c.Ack(ctx, testMsg("a/1", 4), testMsg("a/1", 6)); err != nil {
		t.Fatal(err)
	}
	if off, ok := c.toCommit(); !ok || off != 7 {
		t.Fatalf("toCommit = %d, %v; want 7", off, ok)
	}
	other := testMsg("a/1", 9)
	other.Partition = 3
	if err := c.Ack(ctx, other); err == nil {
		t.Fatal("ack of another partition's message accepted")
	}
	c.setState(stateLost)
	select {
	case <-c.Lost():
	default:
		t.Fatal("Lost not closed")
	}
	_ = c.Ack(ctx, testMsg("a/1", 8))
	if _, ok := c.toCommit(); ok {
		t.Fatal("a lost claim still commits")
	}
	c.stopDelivery()
	for range c.Messages() {
	}
}

func TestClaimCommitsOnlyWhatIsAckedOrForwarded(t *testing.T) {
	cl, err := kgo.NewClient(kgo.SeedBrokers("127.0.0.1:1"))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	s := &session{topic: "mb", opts: Options{BufferSize: 100}.WithDefaults()}
	c := newClaim(s, cl, 0) // no pump, no forwarder: the test plays both
	ctx := context.Background()
	commitPoint := func(want int64, wantOK bool) {
		t.Helper()
		if got, ok := c.toCommit(); got != want || ok != wantOK {
			t.Fatalf("toCommit = %d, %v; want %d, %v", got, ok, want, wantOK)
		}
	}
	rec := func(off int64) *kgo.Record { return &kgo.Record{Topic: "mb", Key: []byte("a/1"), Offset: off} }

	// Offsets 10..15: messages at 10, 12 and 15, foreign records at 11, 13, 14.
	c.push([]channel.Message{testMsg("a/1", 10), testMsg("b/1", 12), testMsg("a/1", 15)},
		[]*kgo.Record{rec(11), rec(13), rec(14)})
	commitPoint(10, false) // nothing done yet

	batch, ok := c.takeForward()
	if !ok || len(batch) != 3 {
		t.Fatalf("takeForward = %d records, %v; want 3", len(batch), ok)
	}
	// The host acks up to 15 while nothing is forwarded: the commit stops
	// at the first foreign record.
	if err := c.Ack(ctx, testMsg("a/1", 10), testMsg("b/1", 12), testMsg("a/1", 15)); err != nil {
		t.Fatal(err)
	}
	commitPoint(11, true)
	c.forwarded(batch[:1])
	commitPoint(13, true)
	c.forwarded(batch[1:])
	commitPoint(16, true)
	c.committedUpTo(16)
	commitPoint(16, false)

	// Forwarded first, acked later: the commit waits for the host.
	c.push([]channel.Message{testMsg("a/1", 17)}, []*kgo.Record{rec(16), rec(18)})
	batch, _ = c.takeForward()
	c.forwarded(batch)
	commitPoint(17, true)
	if err := c.Ack(ctx, testMsg("a/1", 17)); err != nil {
		t.Fatal(err)
	}
	commitPoint(19, true)
}
