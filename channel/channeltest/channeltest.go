// Package channeltest is the conformance suite of the channel contract.
// Every channel backend runs it from its own tests:
//
//	func TestConformance(t *testing.T) {
//		channeltest.Run(t, channeltest.Features{Leases: true}, func(t *testing.T) channeltest.Mailbox {
//			// create a fresh, empty mailbox for t and return its publisher
//			// and a way to make consumers of it
//		})
//	}
//
// Optional behaviour is declared in Features; a test of a feature the
// backend does not declare is skipped with the reason, never passed
// silently.
package channeltest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"sync"
	"testing"
	"time"

	"github.com/postbox-dev/postbox/channel"
	"github.com/postbox-dev/postbox/internal/waitfor"
)

// Features declares what a backend offers beyond the core contract.
type Features struct {
	// Leases: consumers of one mailbox running at once split its
	// partitions, never own one partition at the same time, and the
	// partitions of a consumer that stops move to the others.
	Leases bool
	// Timeout bounds each wait of the suite: for deliveries, for Run to
	// return, for a rebalance to settle. Raise it for backends with slow
	// group coordination.
	//
	// Defaults to 30s.
	Timeout time.Duration
}

func (f Features) timeout() time.Duration {
	if f.Timeout <= 0 {
		return 30 * time.Second
	}
	return f.Timeout
}

// Mailbox is what a test needs of one mailbox under test.
type Mailbox struct {
	// Publisher publishes to the mailbox. The suite may close it; closing it
	// twice must be harmless.
	Publisher channel.Publisher
	// NewConsumer returns a new consumer of the same mailbox, independent
	// of the others as a consumer in another worker process would be. The
	// backend closes it when t ends.
	NewConsumer func(t *testing.T) channel.Consumer
	// Partitions is the mailbox's partition count.
	Partitions int
}

// MailboxOf returns the Mailbox of a backend's mailbox mb: its publisher,
// closed when t ends, its partition count, and the consumers newConsumer
// makes, each closed when its test ends.
func MailboxOf(t *testing.T, mb interface {
	Publisher() channel.Publisher
	Partitions() int
}, newConsumer func(t *testing.T) channel.Consumer) Mailbox {
	pub := mb.Publisher()
	t.Cleanup(func() { pub.Close() })
	return Mailbox{Publisher: pub, Partitions: mb.Partitions(), NewConsumer: func(t *testing.T) channel.Consumer {
		c := newConsumer(t)
		t.Cleanup(func() { c.Close() })
		return c
	}}
}

// Run runs the suite. setup is called once per test, possibly from
// parallel tests, and must return a new, empty mailbox each time, cleaned up
// when its t ends.
func Run(t *testing.T, f Features, setup func(t *testing.T) Mailbox) {
	tests := []struct {
		name string
		fn   func(t *testing.T, f Features, mb Mailbox)
	}{
		{"DeliversInPublishOrder", testDeliversInPublishOrder},
		{"AckedNotRedelivered", testAckedNotRedelivered},
		{"UnackedRedelivered", testUnackedRedelivered},
		{"ReleaseReclaims", testReleaseReclaims},
		{"ConsumersSplitPartitions", testConsumersSplitPartitions},
		{"CancelEndsRun", testCancelEndsRun},
		{"NamesItsMailbox", testNamesItsMailbox},
		{"BadAddressRejectsBatch", testBadAddressRejectsBatch},
		{"BadIdentifiersRejectBatch", testBadIdentifiersRejectBatch},
		{"ClosedReturnsErrClosed", testClosedReturnsErrClosed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.fn(t, f, setup(t))
		})
	}
}

// testDeliversInPublishOrder checks that every message arrives once, on its
// address's home partition, in publish order per partition, with its
// fields intact and its position set.
func testDeliversInPublishOrder(t *testing.T, f Features, mb Mailbox) {
	const n, perBatch, actors = 300, 50, 20
	var sent []channel.Message
	before := time.Now()
	for start := 0; start < n; start += perBatch {
		batch := numbered("order", actors, start, start+perBatch)
		for j := range batch {
			i := start + j
			if i%3 == 0 {
				batch[j].ID = fmt.Sprintf("given-%d", i)
			}
			if i%2 == 0 {
				batch[j].Headers = map[string]string{"seq": fmt.Sprint(i), "kind": "even"}
			}
		}
		publish(t, mb.Publisher, batch...)
		sent = append(sent, batch...)
	}
	after := time.Now()

	r := startConsumer(t, f, mb.NewConsumer(t), nil)
	r.waitAll(n)
	r.stop()

	got := r.received()
	if len(got) != n {
		t.Errorf("received %d messages, want %d (no duplicates without failures)", len(got), n)
	}
	ids := make(map[string]int)
	perPartition := make(map[int32][]channel.Message)
	for _, m := range got {
		i, ok := payloadIndex(m.Payload)
		if !ok {
			t.Fatalf("received unknown payload %q", m.Payload)
		}
		want := sent[i]
		if m.Address != want.Address {
			t.Errorf("message %d: address %v, want %v", i, m.Address, want.Address)
		}
		if home := channel.HomePartition(want.Address.String(), mb.Partitions); m.Partition != home {
			t.Errorf("message %d to %v on partition %d, want its home partition %d", i, want.Address, m.Partition, home)
		}
		switch {
		case want.ID != "" && m.ID != want.ID:
			t.Errorf("message %d: ID %q, want the given %q", i, m.ID, want.ID)
		case m.ID == "":
			t.Errorf("message %d: published without ID and delivered without one", i)
		}
		if j, dup := ids[m.ID]; dup && j != i {
			t.Errorf("messages %d and %d share ID %q", j, i, m.ID)
		}
		ids[m.ID] = i
		if !headersEqual(m.Headers, want.Headers) {
			t.Errorf("message %d: headers %v, want %v", i, m.Headers, want.Headers)
		}
		if m.Mailbox == "" {
			t.Errorf("message %d: Mailbox not set", i)
		}
		if m.PublishedAt.Before(before.Add(-time.Minute)) || m.PublishedAt.After(after.Add(time.Minute)) {
			t.Errorf("message %d: PublishedAt %v, want about %v", i, m.PublishedAt, before)
		}
		perPartition[m.Partition] = append(perPartition[m.Partition], m)
	}
	for p, msgs := range perPartition {
		var want []int
		for i, s := range sent {
			if channel.HomePartition(s.Address.String(), mb.Partitions) == p {
				want = append(want, i)
			}
		}
		var order []int
		for k, m := range msgs {
			i, _ := payloadIndex(m.Payload)
			order = append(order, i)
			if k > 0 && m.Offset <= msgs[k-1].Offset {
				t.Errorf("partition %d: offset %d delivered after %d, want increasing offsets", p, m.Offset, msgs[k-1].Offset)
			}
		}
		if fmt.Sprint(order) != fmt.Sprint(want) {
			t.Errorf("partition %d delivered messages %v, want publish order %v", p, order, want)
		}
	}
}

// testAckedNotRedelivered checks that acks survive Release and reach the
// next consumer: it sees only what was published after them.
func testAckedNotRedelivered(t *testing.T, f Features, mb Mailbox) {
	const n = 40
	publish(t, mb.Publisher, numbered("acked", 8, 0, n)...)
	r1 := startConsumer(t, f, mb.NewConsumer(t), nil)
	r1.waitAll(n)
	r1.stop()

	r2 := startConsumer(t, f, mb.NewConsumer(t), nil)
	markers := publishMarkers(t, mb, "after-ack")
	r2.waitReceived(func(got []channel.Message) bool { return containsAll(got, markers) }, "a marker on every partition")
	for _, m := range r2.received() {
		if i, ok := payloadIndex(m.Payload); ok {
			t.Errorf("message %d (ID %s) was acked and released, but delivered again to the next consumer", i, m.ID)
		}
	}
}

// testUnackedRedelivered checks that a message not acked before Release
// goes to the next consumer, same ID and order, counted once more.
func testUnackedRedelivered(t *testing.T, f Features, mb Mailbox) {
	const n = 40
	publish(t, mb.Publisher, numbered("unacked", 8, 0, n)...)
	r1 := startConsumer(t, f, mb.NewConsumer(t), &consumerOptions{noAck: true})
	r1.waitAll(n)

	// Ack the first half of every partition, in offset order, as a host
	// acks up to its watermark.
	first := make(map[int]channel.Message) // payload index -> first delivery
	byPartition := make(map[int32][]channel.Message)
	for _, m := range r1.received() {
		i, _ := payloadIndex(m.Payload)
		if _, seen := first[i]; !seen {
			first[i] = m
			byPartition[m.Partition] = append(byPartition[m.Partition], m)
		}
	}
	acked := make(map[int]bool)
	for p, ms := range byPartition {
		half := ms[:len(ms)/2]
		if err := r1.claim(p).Ack(t.Context(), half...); err != nil {
			t.Fatalf("ack on partition %d: %v", p, err)
		}
		for _, m := range half {
			i, _ := payloadIndex(m.Payload)
			acked[i] = true
		}
	}
	r1.stop()

	r2 := startConsumer(t, f, mb.NewConsumer(t), nil)
	r2.waitReceived(func(got []channel.Message) bool {
		return len(distinctPayloads(got)) >= n-len(acked)
	}, "the %d unacked messages", n-len(acked))
	r2.stop()
	last := make(map[int32]int64)
	for _, m := range r2.received() {
		i, _ := payloadIndex(m.Payload)
		if acked[i] {
			t.Errorf("message %d was acked before Release but delivered again", i)
			continue
		}
		was := first[i]
		if m.ID != was.ID {
			t.Errorf("message %d redelivered with ID %q, want the same %q", i, m.ID, was.ID)
		}
		if m.Offset != was.Offset {
			t.Errorf("message %d redelivered at offset %d, want its offset %d", i, m.Offset, was.Offset)
		}
		if m.Offset <= last[m.Partition] && last[m.Partition] != 0 {
			t.Errorf("partition %d redelivered offset %d after %d, want publish order", m.Partition, m.Offset, last[m.Partition])
		}
		last[m.Partition] = m.Offset
	}
}

// testReleaseReclaims checks a Release that nothing asked for (the host
// gives a partition up when its journal refuses it): while the consumer
// still runs, the partition is claimed again, after Release returned, and
// delivers every unacked message again in offset order and none of the
// acked ones. Without this a partition can stay owned but idle.
func testReleaseReclaims(t *testing.T, f Features, mb Mailbox) {
	const n, delivered, acked = 30, 15, 10
	var msgs []channel.Message
	for i := range n {
		a := AddressOn(t, fmt.Sprintf("reclaim%d", i%4), 0, mb.Partitions)
		msgs = append(msgs, channel.Message{Address: a, Payload: payload(i)})
	}
	publish(t, mb.Publisher, msgs...)

	var (
		mu                  sync.Mutex
		old                 channel.Claim
		oldGot              []channel.Message // delivered on old before its Release
		again               = make(map[channel.Claim][]channel.Message)
		releasing, returned bool
		errs                []string
	)
	ack := func(cl channel.Claim, ms ...channel.Message) error {
		ctx, cancel := context.WithTimeout(context.Background(), f.timeout())
		defer cancel()
		return cl.Ack(ctx, ms...)
	}
	r := startConsumer(t, f, mb.NewConsumer(t), &consumerOptions{handle: func(cl channel.Claim, m channel.Message) {
		mu.Lock()
		if old == nil {
			old = cl
		}
		switch {
		case cl == old && releasing:
			// Handed out around Release: unacked, so it must come back.
			mu.Unlock()
			return
		case cl == old:
			oldGot = append(oldGot, m)
			if len(oldGot) < delivered {
				mu.Unlock()
				return
			}
			releasing = true
			mu.Unlock()
			err := ack(cl, oldGot[:acked]...)
			ctx, cancel := context.WithTimeout(context.Background(), f.timeout())
			if err == nil {
				err = cl.Release(ctx)
			}
			cancel()
			mu.Lock()
			returned = true
			if err != nil {
				errs = append(errs, fmt.Sprintf("ack and Release of partition %d: %v", cl.Partition(), err))
			}
			mu.Unlock()
			return
		}
		if !returned {
			errs = append(errs, fmt.Sprintf("message %s delivered on a new claim of partition %d before the old claim's Release returned", m.ID, m.Partition))
		}
		again[cl] = append(again[cl], m)
		mu.Unlock()
		if err := ack(cl, m); err != nil {
			mu.Lock()
			errs = append(errs, fmt.Sprintf("ack on the new claim of partition %d: %v", m.Partition, err))
			mu.Unlock()
		}
	}})

	isAcked := make(map[string]bool)
	var unacked []string
	waitfor.Until(t, f.timeout(), fmt.Sprintf("%d deliveries, %d acks and the Release of partition 0", delivered, acked), func() bool {
		mu.Lock()
		defer mu.Unlock()
		return returned
	})
	mu.Lock()
	for _, m := range oldGot[:acked] {
		isAcked[string(m.Payload)] = true
	}
	mu.Unlock()
	for _, m := range msgs {
		if !isAcked[string(m.Payload)] {
			unacked = append(unacked, string(m.Payload))
		}
	}
	redelivered := func() []channel.Message {
		mu.Lock()
		defer mu.Unlock()
		var all []channel.Message
		for _, ms := range again {
			all = append(all, ms...)
		}
		return all
	}
	waitfor.Until(t, f.timeout(), fmt.Sprintf("partition 0 to be claimed again after a Release nothing asked for, and its %d unacked messages delivered again (the partition stays owned but idle?)", len(unacked)), func() bool {
		return containsAll(redelivered(), unacked)
	})
	// The new claim keeps flowing.
	marker := channel.Message{Address: AddressOn(t, "reclaim0", 0, mb.Partitions), Payload: []byte("reclaim-marker")}
	publish(t, mb.Publisher, marker)
	waitfor.Until(t, f.timeout(), "a message published after the reclaim", func() bool {
		return indexOf(redelivered(), "reclaim-marker", 0) >= 0
	})
	r.stop()

	mu.Lock()
	defer mu.Unlock()
	for _, e := range errs {
		t.Error(e)
	}
	first := make(map[string]channel.Message)
	for _, m := range oldGot {
		first[string(m.Payload)] = m
	}
	for cl, ms := range again {
		for k, m := range ms {
			if isAcked[string(m.Payload)] {
				t.Errorf("message %s (offset %d) was acked before Release but delivered again on the new claim", m.Payload, m.Offset)
			}
			if k > 0 && m.Offset <= ms[k-1].Offset {
				t.Errorf("new claim of partition %d delivered offset %d after %d, want increasing offsets", cl.Partition(), m.Offset, ms[k-1].Offset)
			}
			was, ok := first[string(m.Payload)]
			if !ok {
				continue
			}
			if m.ID != was.ID || m.Offset != was.Offset {
				t.Errorf("message %s redelivered with ID %q at offset %d, want the same %q at %d", m.Payload, m.ID, m.Offset, was.ID, was.Offset)
			}
		}
	}
}

// testNamesItsMailbox checks that consumers of one mailbox name it alike,
// and not with the empty string: hosts key journal partitions by it.
func testNamesItsMailbox(t *testing.T, f Features, mb Mailbox) {
	a, b := mb.NewConsumer(t), mb.NewConsumer(t)
	if a.Mailbox() == "" || a.Mailbox() != b.Mailbox() {
		t.Errorf("two consumers of one mailbox name it %q and %q, want the same non-empty name", a.Mailbox(), b.Mailbox())
	}
}

// testConsumersSplitPartitions checks sharing: two consumers split the
// partitions without ever owning one at the same time, and the survivor
// takes over the partitions of one that stops.
func testConsumersSplitPartitions(t *testing.T, f Features, mb Mailbox) {
	if !f.Leases {
		t.Skip("backend does not declare Features.Leases: consumers do not share partitions")
	}
	if mb.Partitions < 2 {
		t.Skipf("mailbox has %d partition: need 2 to split", mb.Partitions)
	}
	own := newOwnership(t)
	ra := startConsumer(t, f, mb.NewConsumer(t), &consumerOptions{name: "A", own: own})
	waitfor.Until(t, f.timeout(), "consumer A to own every partition", func() bool { return ra.owns() == mb.Partitions })

	rb := startConsumer(t, f, mb.NewConsumer(t), &consumerOptions{name: "B", own: own})
	waitfor.Until(t, f.timeout(), "A and B to split the partitions", func() bool {
		a, b := ra.owns(), rb.owns()
		return a > 0 && b > 0 && a+b == mb.Partitions
	})

	const n = 200
	publish(t, mb.Publisher, numbered("split", 32, 0, n)...)
	waitfor.Until(t, f.timeout(), "A and B together to receive every message", func() bool {
		return len(distinctPayloads(append(ra.received(), rb.received()...))) == n
	})
	if len(ra.received()) == 0 || len(rb.received()) == 0 {
		t.Errorf("A received %d and B %d messages: want both to work", len(ra.received()), len(rb.received()))
	}

	ra.stop()
	waitfor.Until(t, f.timeout(), "B to take over every partition after A stopped", func() bool { return rb.owns() == mb.Partitions })
	publish(t, mb.Publisher, numbered("split", 32, n, n+100)...)
	rb.waitReceived(func(got []channel.Message) bool {
		seen := distinctPayloads(got)
		for i := n; i < n+100; i++ {
			if !seen[string(payload(i))] {
				return false
			}
		}
		return true
	}, "the messages published after A stopped")
	rb.stop()
}

// testCancelEndsRun checks that cancelling Run's context makes it return,
// with every claim's Messages closed.
func testCancelEndsRun(t *testing.T, f Features, mb Mailbox) {
	const n = 20
	publish(t, mb.Publisher, numbered("cancel", n, 0, n)...)
	r := startConsumer(t, f, mb.NewConsumer(t), &consumerOptions{noAck: true})
	r.waitAll(n)
	claims := r.claimsSeen()
	r.cancel()
	select {
	case err := <-r.done:
		r.runErr = &err
		if err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("Run returned %v after its context was cancelled, want nil", err)
		}
	case <-time.After(f.timeout()):
		t.Fatalf("Run did not return within %v of its context being cancelled", f.timeout())
	}
	for _, cl := range claims {
		select {
		case <-r.loopDone(cl):
		case <-time.After(f.timeout()):
			t.Errorf("partition %d: Messages still open after Run returned", cl.Partition())
		}
	}
	r.stop()
}

// testBadAddressRejectsBatch checks that a batch with a malformed address
// is rejected whole, with ErrBadAddress, and that an empty batch is fine.
func testBadAddressRejectsBatch(t *testing.T, f Features, mb Mailbox) {
	ctx := t.Context()
	if err := mb.Publisher.Publish(ctx); err != nil {
		t.Errorf("Publish of no messages: %v, want nil", err)
	}
	good := channel.Message{Address: channel.Address{Type: "good", ID: "1"}, Payload: []byte("rejected-good")}
	for _, bad := range []channel.Address{{Type: "", ID: "1"}, {Type: "bad", ID: ""}} {
		err := mb.Publisher.Publish(ctx, good, channel.Message{Address: bad, Payload: []byte("bad")})
		if !errors.Is(err, channel.ErrBadAddress) {
			t.Errorf("Publish to address %+v: %v, want ErrBadAddress", bad, err)
		}
	}
	r := startConsumer(t, f, mb.NewConsumer(t), nil)
	markers := publishMarkers(t, mb, "after-bad")
	r.waitReceived(func(got []channel.Message) bool { return containsAll(got, markers) }, "a marker on every partition")
	if indexOf(r.received(), "rejected-good", 0) >= 0 {
		t.Errorf("a message of a rejected batch was stored")
	}
}

// testBadIdentifiersRejectBatch checks the identifier limits of
// channel.MaxIdentifierLen: a batch with one message whose ID or address
// breaks them (a NUL, invalid UTF-8, 1025 bytes) is rejected whole, with
// ErrBadMessageID or ErrBadAddress, and values right at the limit are
// delivered byte-exact.
func testBadIdentifiersRejectBatch(t *testing.T, f Features, mb Mailbox) {
	ctx := t.Context()
	long := func(n int) string { return string(bytes.Repeat([]byte("x"), n)) }
	max := channel.MaxIdentifierLen
	good := channel.Message{Address: channel.Address{Type: "good", ID: "1"}, Payload: []byte("rejected-good")}
	for name, id := range map[string]string{
		"NUL": "m\x00", "invalid UTF-8": "m\xff", "1025 bytes": long(max + 1),
	} {
		bad := channel.Message{ID: id, Address: channel.Address{Type: "good", ID: "2"}, Payload: []byte("rejected-bad")}
		for _, batch := range [][]channel.Message{{good, bad}, {bad, good}} {
			err := mb.Publisher.Publish(ctx, batch...)
			if !errors.Is(err, channel.ErrBadMessageID) || errors.Is(err, channel.ErrBadAddress) {
				t.Errorf("Publish with a message ID with %s: %v, want ErrBadMessageID", name, err)
			}
		}
	}
	for name, a := range map[string]channel.Address{
		"NUL":           {Type: "bad", ID: "1\x00"},
		"invalid UTF-8": {Type: "bad\xff", ID: "1"},
		"1025 bytes":    {Type: "bad", ID: long(max - 3)},
	} {
		bad := channel.Message{Address: a, Payload: []byte("rejected-bad")}
		for _, batch := range [][]channel.Message{{good, bad}, {bad, good}} {
			err := mb.Publisher.Publish(ctx, batch...)
			if !errors.Is(err, channel.ErrBadAddress) || errors.Is(err, channel.ErrBadMessageID) {
				t.Errorf("Publish to an address with %s: %v, want ErrBadAddress", name, err)
			}
		}
	}

	// At the limit, with characters of 2 and 4 bytes, all is kept as sent.
	edge := channel.Message{
		ID:      "é" + long(max-6) + "😀",
		Address: channel.Address{Type: "edge", ID: "ü" + long(max-7)},
		Payload: []byte("edge"),
	}
	if len(edge.ID) != max || len(edge.Address.String()) != max {
		t.Fatalf("test bug: edge ID %d bytes, address %d", len(edge.ID), len(edge.Address.String()))
	}
	publish(t, mb.Publisher, edge)

	r := startConsumer(t, f, mb.NewConsumer(t), nil)
	want := append(publishMarkers(t, mb, "after-bad-ids"), "edge")
	r.waitReceived(func(got []channel.Message) bool { return containsAll(got, want) },
		"the edge message and a marker on every partition")
	got := r.received()
	for _, rejected := range []string{"rejected-good", "rejected-bad"} {
		if indexOf(got, rejected, 0) >= 0 {
			t.Errorf("a message of a rejected batch (%s) was stored", rejected)
		}
	}
	m := got[indexOf(got, "edge", 0)]
	if m.ID != edge.ID || m.Address != edge.Address {
		t.Errorf("message at the limits delivered as ID %q, address %q; want %q, %q", m.ID, m.Address, edge.ID, edge.Address)
	}
}

// testClosedReturnsErrClosed checks Close: Publish and Run afterwards fail
// with ErrClosed, and closing twice is harmless.
func testClosedReturnsErrClosed(t *testing.T, f Features, mb Mailbox) {
	ctx := t.Context()
	if err := mb.Publisher.Close(); err != nil {
		t.Fatalf("Publisher.Close: %v", err)
	}
	err := mb.Publisher.Publish(ctx, channel.Message{Address: channel.Address{Type: "closed", ID: "1"}, Payload: []byte("x")})
	if !errors.Is(err, channel.ErrClosed) {
		t.Errorf("Publish after Close: %v, want ErrClosed", err)
	}
	if err := mb.Publisher.Close(); err != nil {
		t.Errorf("second Publisher.Close: %v, want nil", err)
	}

	c := mb.NewConsumer(t)
	if err := c.Close(); err != nil {
		t.Fatalf("Consumer.Close: %v", err)
	}
	runCtx, cancel := context.WithTimeout(ctx, f.timeout())
	defer cancel()
	if err := c.Run(runCtx, func(cl channel.Claim) { _ = cl.Release(runCtx) }); !errors.Is(err, channel.ErrClosed) {
		t.Errorf("Run after Consumer.Close: %v, want ErrClosed", err)
	}
}

// publish publishes msgs or fails the test.
func publish(t *testing.T, p channel.Publisher, msgs ...channel.Message) {
	t.Helper()
	if err := p.Publish(t.Context(), msgs...); err != nil {
		t.Fatalf("publish %d messages: %v", len(msgs), err)
	}
}

// publishMarkers publishes one message to every partition and returns their
// payloads. Behind them in each partition is everything published earlier.
func publishMarkers(t *testing.T, mb Mailbox, prefix string) []string {
	t.Helper()
	var msgs []channel.Message
	var out []string
	for p := range mb.Partitions {
		pl := fmt.Sprintf("%s-marker-%d", prefix, p)
		msgs = append(msgs, channel.Message{Address: AddressOn(t, prefix, int32(p), mb.Partitions), Payload: []byte(pl)})
		out = append(out, pl)
	}
	publish(t, mb.Publisher, msgs...)
	return out
}

// AddressOn returns an address of type typ whose home partition is p of
// partitions (channel.HomePartition), for tests that aim at one partition.
func AddressOn(t testing.TB, typ string, p int32, partitions int) channel.Address {
	t.Helper()
	for i := range 100000 {
		a := channel.Address{Type: typ, ID: fmt.Sprint(i)}
		if channel.HomePartition(a.String(), partitions) == p {
			return a
		}
	}
	t.Fatalf("no address of type %s found for partition %d of %d", typ, p, partitions)
	return channel.Address{}
}

// numbered returns the messages from to to-1, spread over actors actors of
// type typ, each with payload(i).
func numbered(typ string, actors, from, to int) []channel.Message {
	var msgs []channel.Message
	for i := from; i < to; i++ {
		msgs = append(msgs, channel.Message{Address: channel.Address{Type: typ, ID: fmt.Sprint(i % actors)}, Payload: payload(i)})
	}
	return msgs
}

func payload(i int) []byte { return fmt.Appendf(nil, "msg-%06d", i) }

func payloadIndex(p []byte) (int, bool) {
	var i int
	if _, err := fmt.Sscanf(string(p), "msg-%06d", &i); err != nil || !bytes.Equal(p, payload(i)) {
		return 0, false
	}
	return i, true
}

func distinctPayloads(msgs []channel.Message) map[string]bool {
	seen := make(map[string]bool, len(msgs))
	for _, m := range msgs {
		seen[string(m.Payload)] = true
	}
	return seen
}

func containsAll(msgs []channel.Message, want []string) bool {
	seen := distinctPayloads(msgs)
	for _, w := range want {
		if !seen[w] {
			return false
		}
	}
	return true
}

// indexOf returns the index of the first message at or after from with
// payload p, or -1.
func indexOf(msgs []channel.Message, p string, from int) int {
	for i := from; i < len(msgs); i++ {
		if string(msgs[i].Payload) == p {
			return i
		}
	}
	return -1
}

func payloads(msgs []channel.Message) []string {
	out := make([]string, len(msgs))
	for i, m := range msgs {
		out[i] = string(m.Payload)
	}
	return out
}

func headersEqual(a, b map[string]string) bool {
	if len(a) == 0 && len(b) == 0 {
		return true
	}
	return maps.Equal(a, b)
}
