package redis_test

import (
	"context"
	"fmt"
	"maps"
	"strconv"
	"strings"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/postbox-dev/postbox/channel"
	"github.com/postbox-dev/postbox/channel/redis"
	"github.com/postbox-dev/postbox/internal/backendtest"
	"github.com/postbox-dev/postbox/internal/testenv"
	"github.com/postbox-dev/postbox/internal/waitfor"
)

func publishN(t *testing.T, mb *redis.Mailbox, prefix string, n int) {
	t.Helper()
	var msgs []channel.Message
	for i := range n {
		msgs = append(msgs, channel.Message{
			ID:      fmt.Sprintf("%s-%d", prefix, i),
			Address: channel.Address{Type: "t", ID: strconv.Itoa(i % 3)},
			Payload: []byte(fmt.Sprintf("%s-%d", prefix, i)),
		})
	}
	if err := mb.Publisher().Publish(t.Context(), msgs...); err != nil {
		t.Fatal(err)
	}
}

// A new owner delivers the partition's pending entries again, each with the
// ID and offset it had when delivered to the old owner, before anything
// new, in entry order.
func TestTakeoverDeliversPendingFirst(t *testing.T) {
	name := freshMailbox(t)
	mb := open(t, name, redis.Options{Partitions: 1})
	publishN(t, mb, "old", 10)

	a := backendtest.Record(t, open(t, name, redis.Options{}).Consumer(testConsumerOptions), false)
	waitfor.Until(t, 30*time.Second, "A to receive 10", func() bool { return len(a.Received()) == 10 })
	cl := a.Claim(t)
	toA := map[string]int64{} // ID -> offset, of each message delivered to A
	for _, m := range a.Received() {
		toA[m.ID] = m.Offset
	}
	if len(toA) != 10 {
		t.Fatalf("A received %d distinct messages, want 10 delivered once each", len(toA))
	}
	// A acks the first three and gives the partition up.
	if err := cl.Ack(t.Context(), a.Received()[:3]...); err != nil {
		t.Fatal(err)
	}
	if err := cl.Release(t.Context()); err != nil {
		t.Fatal(err)
	}
	publishN(t, mb, "new", 5)

	b := backendtest.Record(t, open(t, name, redis.Options{}).Consumer(testConsumerOptions), true)
	waitfor.Until(t, 30*time.Second, "B to receive 12", func() bool { return len(b.Received()) >= 12 })
	var order []string
	var last int64
	for i, m := range b.Received() {
		order = append(order, m.ID)
		offset, again := toA[m.ID]
		switch {
		case i < 7 && !again:
			t.Errorf("%s delivered to B first, want a redelivery of one of A's", m.ID)
		case i < 7 && m.Offset != offset:
			t.Errorf("%s redelivered to B at offset %d, want its offset %d from A", m.ID, m.Offset, offset)
		case i >= 7 && again:
			t.Errorf("%s delivered to B again, want a first delivery", m.ID)
		}
		if i > 0 && m.Offset <= last {
			t.Errorf("%s delivered to B at offset %d after %d, want entry order", m.ID, m.Offset, last)
		}
		last = m.Offset
	}
	want := "[old-3 old-4 old-5 old-6 old-7 old-8 old-9 new-0 new-1 new-2 new-3 new-4]"
	if fmt.Sprint(order) != want {
		t.Errorf("B received %v, want %s: pending entries first, in order", order, want)
	}

	// B acked everything: the stream is empty, and only B is left in the
	// group.
	c := testenv.RedisClient(t)
	stream := "{postbox:" + name + "}:s:0"
	waitfor.Until(t, 10*time.Second, "the acked entries to be deleted", func() bool {
		n, err := c.XLen(t.Context(), stream).Result()
		return err == nil && n == 0
	})
	consumers, err := c.XInfoConsumers(t.Context(), stream, "postbox").Result()
	if err != nil || len(consumers) != 1 {
		t.Errorf("group consumers after takeover: %+v, %v; want B alone", consumers, err)
	}
}

// A consumer whose lease was taken over behind its back (a zombie: it was
// paused past its TTL) can ack nothing: its script finds the lease gone,
// applies nothing, and ends the claim with Lost.
func TestZombieAcksAreFenced(t *testing.T) {
	name := freshMailbox(t)
	mb := open(t, name, redis.Options{Partitions: 1})
	publishN(t, mb, "z", 5)
	a := backendtest.Record(t, open(t, name, redis.Options{}).Consumer(redis.ConsumerOptions{LeaseTTL: 30 * time.Second}), false)
	waitfor.Until(t, 30*time.Second, "A to receive 5", func() bool { return len(a.Received()) == 5 })
	cl := a.Claim(t)

	// Another owner takes the lease, as after A's lease expired.
	c := testenv.RedisClient(t)
	lease := "{postbox:" + name + "}:lease:0"
	if err := c.Set(t.Context(), lease, "99:intruder", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if err := cl.Ack(t.Context(), a.Received()...); err != nil {
		t.Fatal(err)
	}
	backendtest.Lost(t, cl, 10*time.Second, "the claim lost after its ack found another owner's lease")
	pending, err := c.XPending(t.Context(), "{postbox:"+name+"}:s:0", "postbox").Result()
	if err != nil || pending.Count != 5 {
		t.Errorf("pending after fenced acks: %+v, %v; want all 5 still pending", pending, err)
	}
	if v, _ := c.Get(t.Context(), lease).Result(); v != "99:intruder" {
		t.Errorf("lease is %q after the zombie released, want the intruder's", v)
	}
	if err := cl.Release(t.Context()); err != nil {
		t.Errorf("release after lost: %v", err)
	}
}

// A lease taken by another owner is found out by the next renewal: Lost
// closes.
func TestTakenLeaseIsLost(t *testing.T) {
	name := freshMailbox(t)
	open(t, name, redis.Options{Partitions: 1})
	c := testenv.RedisClient(t)
	a := backendtest.Record(t, open(t, name, redis.Options{}).Consumer(redis.ConsumerOptions{LeaseTTL: 600 * time.Millisecond}), false)
	cl := a.Claim(t)
	if err := c.Set(t.Context(), "{postbox:"+name+"}:lease:0", "0:other", 0).Err(); err != nil {
		t.Fatal(err)
	}
	backendtest.Lost(t, cl, 10*time.Second, "the claim lost after its lease was taken")
}

// A lease that cannot be renewed in time is given up by the local clock:
// Lost closes while the server still holds the lease (writes, and with
// them key expiry, are paused).
func TestStalledRenewalLosesLease(t *testing.T) {
	name := freshMailbox(t)
	open(t, name, redis.Options{Partitions: 1})
	c := testenv.RedisClient(t)
	const ttl = 600 * time.Millisecond
	a := backendtest.Record(t, open(t, name, redis.Options{}).Consumer(redis.ConsumerOptions{LeaseTTL: ttl}), false)
	cl := a.Claim(t)
	time.Sleep(ttl / 2) // let a renewal or two go through
	paused := time.Now()
	if err := c.Do(t.Context(), "CLIENT", "PAUSE", "2000", "WRITE").Err(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Do(context.Background(), "CLIENT", "UNPAUSE") })
	lease := "{postbox:" + name + "}:lease:0"
	select {
	case <-cl.Lost():
		lostAt := time.Now()
		if d := lostAt.Sub(paused); d > ttl+300*time.Millisecond {
			t.Errorf("lost %v after renewals stalled, want within about the TTL %v", d, ttl)
		}
		// Redis runs on this host: one clock. Key expiry is paused with
		// writes, so the key is still there to ask.
		exp, err := c.Do(t.Context(), "PEXPIRETIME", lease).Int64()
		if err != nil || lostAt.UnixMilli() >= exp {
			t.Errorf("claim lost at %d ms, the lease ends on the server at %d ms (%v): want the claim lost first", lostAt.UnixMilli(), exp, err)
		}
	case <-time.After(1800 * time.Millisecond):
		t.Fatal("claim not lost while renewals stalled past the TTL")
	}
}

// Entries not written by a Publisher get an ID from their position.
func TestForeignEntryGetsPositionID(t *testing.T) {
	name := freshMailbox(t)
	mb := open(t, name, redis.Options{Partitions: 1})
	c := testenv.RedisClient(t)
	id, err := c.XAdd(t.Context(), &goredis.XAddArgs{
		Stream: "{postbox:" + name + "}:s:0",
		Values: []any{"address", "ext/1", "payload", "hi"},
	}).Result()
	if err != nil {
		t.Fatal(err)
	}
	got := consume(t, mb, 1, nil)
	if want := name + "/0/" + id; got[0].ID != want || got[0].Address.String() != "ext/1" || string(got[0].Payload) != "hi" {
		t.Errorf("foreign entry delivered as %+v, want ID %s", got[0], want)
	}
}

// A pending entry deleted from the stream by another client is not
// delivered to the partition's next owner, which claims the rest in order
// and leaves nothing pending.
func TestTakeoverSkipsDeletedPendingEntry(t *testing.T) {
	name := freshMailbox(t)
	mb := open(t, name, redis.Options{Partitions: 1})
	publishN(t, mb, "d", 3)
	c := testenv.RedisClient(t)
	stream := "{postbox:" + name + "}:s:0"
	// A consumer that is gone read all three; the middle one is deleted.
	read, err := c.XReadGroup(t.Context(), &goredis.XReadGroupArgs{
		Group: "postbox", Consumer: "gone", Streams: []string{stream, ">"}, Count: 10,
	}).Result()
	if err != nil || len(read) != 1 || len(read[0].Messages) != 3 {
		t.Fatalf("read as another consumer: %v, %v", read, err)
	}
	if err := c.XDel(t.Context(), stream, read[0].Messages[1].ID).Err(); err != nil {
		t.Fatal(err)
	}

	b := backendtest.Record(t, open(t, name, redis.Options{}).Consumer(testConsumerOptions), true)
	waitfor.Until(t, 30*time.Second, "nothing left pending", func() bool {
		p, err := c.XPending(t.Context(), stream, "postbox").Result()
		return err == nil && p.Count == 0 && len(b.Received()) >= 2
	})
	var ids []string
	for _, m := range b.Received() {
		ids = append(ids, m.ID)
	}
	if fmt.Sprint(ids) != "[d-0 d-2]" {
		t.Errorf("new owner received %v, want [d-0 d-2]: the deleted entry left out", ids)
	}
	consumers, err := c.XInfoConsumers(t.Context(), stream, "postbox").Result()
	if err != nil || len(consumers) != 1 || consumers[0].Name == "gone" {
		t.Errorf("group consumers after takeover: %+v, %v; want the new owner alone", consumers, err)
	}
}

// Entries written by another client with XADD, whose fields are missing or
// garbled, are delivered anyway, in entry order: with the zero Address and
// the address field in HeaderBadAddress when it is not "type/id", so the
// host dead-letters and acks them. Addresses and IDs a journal cannot
// store (NUL, invalid UTF-8, very long) are delivered as they are, for the
// host to refuse. None is dropped or left pending, and none stalls the
// partition.
func TestGarbledEntriesAreDelivered(t *testing.T) {
	name := freshMailbox(t)
	open(t, name, redis.Options{Partitions: 1}) // creates the stream and group
	long := strings.Repeat("x", 1100)
	type want struct {
		id      string // "" : the position ID
		addr    channel.Address
		payload string
		headers map[string]string
	}
	bad := func(raw string, h ...string) map[string]string {
		m := map[string]string{redis.HeaderBadAddress: raw}
		for i := 0; i+1 < len(h); i += 2 {
			m[h[i]] = h[i+1]
		}
		return m
	}
	cases := []struct {
		fields []any
		want   want
	}{
		{[]any{"id", "no-address", "payload", "p1", "h:trace", "t1"}, want{"no-address", channel.Address{}, "p1", bad("", "trace", "t1")}},
		{[]any{"id", "no-slash", "address", "nobody", "payload", "p2"}, want{"no-slash", channel.Address{}, "p2", bad("nobody")}},
		{[]any{"address", "/x", "payload", "p3"}, want{"", channel.Address{}, "p3", bad("/x")}},
		{[]any{"id", "no-id-part", "address", "a/"}, want{"no-id-part", channel.Address{}, "", bad("a/")}},
		{[]any{"foo", "bar"}, want{"", channel.Address{}, "", bad("")}},
		{[]any{"id", "", "address", "", "payload", ""}, want{"", channel.Address{}, "", bad("")}},
		// A bad address replaces a header of that name; a valid one keeps it.
		{[]any{"id", "own-header", "h:" + redis.HeaderBadAddress, "x", "address", "nokey"}, want{"own-header", channel.Address{}, "", bad("nokey")}},
		{[]any{"id", "valid", "address", "t/ok", "h:" + redis.HeaderBadAddress, "x"}, want{"valid", channel.Address{Type: "t", ID: "ok"}, "", map[string]string{redis.HeaderBadAddress: "x"}}},
		{[]any{"id", "nul\x00id", "address", "t/a\x00b", "payload", "p7"}, want{"nul\x00id", channel.Address{Type: "t", ID: "a\x00b"}, "p7", nil}},
		{[]any{"id", "\xff\xfe", "address", "t\xff/\xfe", "payload", "\xff"}, want{"\xff\xfe", channel.Address{Type: "t\xff", ID: "\xfe"}, "\xff", nil}},
		{[]any{"id", "long-" + long, "address", "t/" + long}, want{"long-" + long, channel.Address{Type: "t", ID: long}, "", nil}},
		{[]any{"id", "last", "address", "t/1", "payload", "end"}, want{"last", channel.Address{Type: "t", ID: "1"}, "end", nil}},
	}
	c := testenv.RedisClient(t)
	stream := "{postbox:" + name + "}:s:0"
	entryIDs := make([]string, len(cases))
	for i, tc := range cases {
		id, err := c.XAdd(t.Context(), &goredis.XAddArgs{Stream: stream, Values: tc.fields}).Result()
		if err != nil {
			t.Fatal(err)
		}
		entryIDs[i] = id
	}

	r := backendtest.Record(t, open(t, name, redis.Options{}).Consumer(testConsumerOptions), true)
	deadline := time.Now().Add(10 * time.Second)
	for len(r.Received()) < len(cases) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	got := r.Received()
	if len(got) != len(cases) {
		t.Fatalf("delivered %d of %d entries: %q", len(got), len(cases), short(ids(got)))
	}
	for i, tc := range cases {
		m, w := got[i], tc.want
		if w.id == "" {
			w.id = fmt.Sprintf("%s/0/%s", name, entryIDs[i])
		}
		if m.ID != w.id || m.Address != w.addr || string(m.Payload) != w.payload || m.Payload == nil || !maps.Equal(m.Headers, w.headers) {
			t.Errorf("entry %d %q delivered as ID %q, address %q, payload %q, headers %q; want ID %q, address %q, payload %q, headers %q",
				i, short(fmt.Sprint(tc.fields)), short(m.ID), short(m.Address.String()), m.Payload, m.Headers,
				short(w.id), short(w.addr.String()), w.payload, w.headers)
		}
	}
	waitEmpty(t, name)
}

// short keeps a failure message readable.
func short[T string | []string](v T) string {
	s := fmt.Sprint(v)
	if len(s) > 80 {
		return s[:80] + "…"
	}
	return s
}
