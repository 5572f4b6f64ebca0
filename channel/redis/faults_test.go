// Faults of the Redis claim: takeovers and zombies (a lease lost to
// another owner or to time), and replies lost after the server ran the
// command.

package redis_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/postbox-dev/postbox/channel"
	"github.com/postbox-dev/postbox/channel/internal/backendtest"
	"github.com/postbox-dev/postbox/channel/redis"
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

// errLostReply is what a command whose reply was lost returns.
var errLostReply = errors.New("i/o timeout (injected: the server ran the command, its reply was lost)")

// replyLoss is a go-redis hook that runs every command and then, for those
// lose picks (it sees the reply), drops the reply: the caller gets a
// timeout although the server ran the command, as after a network blip.
// With rerun set it runs the command once more and returns that reply
// instead, as go-redis itself does when it retries a read timeout.
type replyLoss struct {
	lose  func(cmd goredis.Cmder) bool
	rerun bool

	mu   sync.Mutex
	lost []string // the lost commands, for failure messages
	hit  chan struct{}
}

func newReplyLoss(lose func(goredis.Cmder) bool) *replyLoss {
	return &replyLoss{lose: lose, hit: make(chan struct{}, 1)}
}

func (h *replyLoss) DialHook(next goredis.DialHook) goredis.DialHook { return next }

func (h *replyLoss) ProcessHook(next goredis.ProcessHook) goredis.ProcessHook {
	return func(ctx context.Context, cmd goredis.Cmder) error {
		if err := next(ctx, cmd); err != nil || !h.lose(cmd) {
			return err
		}
		h.note(cmd)
		if h.rerun {
			return next(ctx, cmd)
		}
		cmd.SetErr(errLostReply)
		return errLostReply
	}
}

// ProcessPipelineHook loses the replies of a whole pipeline (the flusher
// sends acks in one) when lose picks any of its commands.
func (h *replyLoss) ProcessPipelineHook(next goredis.ProcessPipelineHook) goredis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []goredis.Cmder) error {
		if err := next(ctx, cmds); err != nil || !slices.ContainsFunc(cmds, h.lose) {
			return err
		}
		h.note(cmds[0])
		if h.rerun {
			return next(ctx, cmds)
		}
		for _, c := range cmds {
			c.SetErr(errLostReply)
		}
		return errLostReply
	}
}

func (h *replyLoss) note(cmd goredis.Cmder) {
	h.mu.Lock()
	h.lost = append(h.lost, fmt.Sprint(cmd.Args()[:min(len(cmd.Args()), 2)]))
	h.mu.Unlock()
	select {
	case h.hit <- struct{}{}:
	default:
	}
}

func (h *replyLoss) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.lost)
}

// lossyMailbox opens mailbox name on a client of its own with hook h.
func lossyMailbox(t *testing.T, name string, h *replyLoss) *redis.Mailbox {
	t.Helper()
	c := goredis.NewClient(&goredis.Options{Addr: testenv.Redis(t), PoolSize: 32})
	c.AddHook(h)
	mb, err := redis.New(t.Context(), c, name, redis.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		mb.Close()
		c.Close()
	})
	return mb
}

// isScript reports whether cmd runs the script with hash sha.
func isScript(cmd goredis.Cmder, sha string) bool {
	a := cmd.Args()
	return len(a) > 1 && strings.EqualFold(fmt.Sprint(a[0]), "evalsha") && a[1] == sha
}

// holdsID reports whether a script reply holds an entry with message ID id
// (a field list with "id", id in it).
func holdsID(v any, id string) bool {
	s, ok := v.([]any)
	if !ok {
		return false
	}
	for i, x := range s {
		if x == "id" && i+1 < len(s) && s[i+1] == id {
			return true
		}
		if holdsID(x, id) {
			return true
		}
	}
	return false
}

// loseOnce picks the first run of the script sha whose reply holds id.
func loseOnce(sha, id string) func(goredis.Cmder) bool {
	var once sync.Once
	return func(cmd goredis.Cmder) bool {
		if !isScript(cmd, sha) {
			return false
		}
		c, ok := cmd.(*goredis.Cmd)
		if !ok || !holdsID(c.Val(), id) {
			return false
		}
		picked := false
		once.Do(func() { picked = true })
		return picked
	}
}

// oneActor publishes messages with the given IDs to the actor t/1.
func oneActor(t *testing.T, mb *redis.Mailbox, ids ...string) {
	t.Helper()
	var msgs []channel.Message
	for _, id := range ids {
		msgs = append(msgs, channel.Message{ID: id, Address: channel.Address{Type: "t", ID: "1"}, Payload: []byte(id)})
	}
	if err := mb.Publisher().Publish(t.Context(), msgs...); err != nil {
		t.Fatal(err)
	}
}

// ids lists the message IDs of msgs.
func ids(msgs []channel.Message) []string {
	out := make([]string, len(msgs))
	for i, m := range msgs {
		out[i] = m.ID
	}
	return out
}

// expectIDs waits until r received at least len(want) messages (or 10s
// passed), gives a straggler a moment, and checks what arrived, in order.
func expectIDs(t *testing.T, r *backendtest.Recorder, want ...string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for len(r.Received()) < len(want) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond) // a duplicate or straggler would show by now
	if got := ids(r.Received()); !slices.Equal(got, want) {
		t.Fatalf("received %v, want %v: in order, none missing, none twice", got, want)
	}
}

// waitEmpty waits for the partition stream to be empty: everything acked.
func waitEmpty(t *testing.T, name string) {
	t.Helper()
	c := testenv.RedisClient(t)
	waitfor.Until(t, 10*time.Second, "the stream to empty (every entry acked)", func() bool {
		n, err := c.XLen(t.Context(), "{postbox:"+name+"}:s:0").Result()
		return err == nil && n == 0
	})
}

// When the reply of a read is lost after Redis ran it, the entries it read
// sit in the consumer's pending list. The claim must deliver them before
// anything later of the partition, not strand them while later messages of the
// same actor overtake them.
func TestLostReadReplyKeepsOrder(t *testing.T) {
	one := testConsumerOptions
	one.BatchSize = 1
	for _, tc := range []struct {
		name  string
		opts  redis.ConsumerOptions
		rerun bool
		early []string // published before the consumer starts
		late  []string // published once the reply was lost
	}{
		// Every read takes one entry: the read after the lost one would
		// take m2.
		{"one per read", one, false, []string{"m1", "m2", "m3"}, nil},
		// m2 and m3 arrive after the read of m1 lost its reply.
		{"later messages", testConsumerOptions, false, []string{"m1"}, []string{"m2", "m3"}},
		// go-redis retries a command whose reply timed out: the retry's
		// read runs on the server after the first one read m1.
		{"retried by the client", testConsumerOptions, true, []string{"m1"}, []string{"m2", "m3"}},
		{"retried, one per read", one, true, []string{"m1", "m2", "m3"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			name := freshMailbox(t)
			mb := open(t, name, redis.Options{Partitions: 1})
			oneActor(t, mb, tc.early...)
			h := newReplyLoss(loseOnce(redis.ReadScriptSHA, "m1"))
			h.rerun = tc.rerun
			r := backendtest.Record(t, lossyMailbox(t, name, h).Consumer(tc.opts), true)
			select {
			case <-h.hit:
			case <-time.After(10 * time.Second):
				t.Fatal("no read of m1 within 10s")
			}
			oneActor(t, mb, tc.late...)
			expectIDs(t, r, append(slices.Clone(tc.early), tc.late...)...)
			waitEmpty(t, name)
		})
	}
}

// Lost replies of the script that claims the partition's pending entries:
// a previous owner's, and the consumer's own from its previous claim.
func TestLostClaimReplyKeepsOrder(t *testing.T) {
	t.Run("takeover", func(t *testing.T) {
		name := freshMailbox(t)
		mb := open(t, name, redis.Options{Partitions: 1})
		oneActor(t, mb, "m1", "m2", "m3")
		a := backendtest.Record(t, open(t, name, redis.Options{}).Consumer(testConsumerOptions), false)
		waitfor.Until(t, 10*time.Second, "A to receive 3", func() bool { return len(a.Received()) == 3 })
		if err := a.Claim(t).Release(t.Context()); err != nil {
			t.Fatal(err)
		}
		h := newReplyLoss(loseOnce(redis.ClaimScriptSHA, "m1"))
		b := backendtest.Record(t, lossyMailbox(t, name, h).Consumer(testConsumerOptions), true)
		select {
		case <-h.hit:
		case <-time.After(10 * time.Second):
			t.Fatal("no claim of m1 within 10s")
		}
		oneActor(t, mb, "m4")
		expectIDs(t, b, "m1", "m2", "m3", "m4")
		waitEmpty(t, name)
	})
	t.Run("same owner", func(t *testing.T) {
		name := freshMailbox(t)
		mb := open(t, name, redis.Options{Partitions: 1})
		h := newReplyLoss(loseOnce(redis.ClaimScriptSHA, "m1"))
		c := lossyMailbox(t, name, h).Consumer(testConsumerOptions)
		var (
			mu  sync.Mutex
			got []string
		)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() {
			done <- c.Run(ctx, func(cl channel.Claim) {
				for m := range cl.Messages() {
					mu.Lock()
					giveUp := m.ID == "m1" && !slices.Contains(got, "m1")
					got = append(got, m.ID)
					mu.Unlock()
					if giveUp {
						// Give the partition up with m1 unacked: the
						// consumer takes it again and claims m1 back.
						break
					}
					_ = cl.Ack(context.Background(), m)
				}
				_ = cl.Release(context.Background())
			})
		}()
		defer func() {
			cancel()
			if err := <-done; err != nil {
				t.Error(err)
			}
		}()
		oneActor(t, mb, "m1")
		waitfor.Until(t, 10*time.Second, "the first delivery of m1", func() bool { mu.Lock(); defer mu.Unlock(); return len(got) > 0 })
		oneActor(t, mb, "m2", "m3")
		waitfor.Until(t, 10*time.Second, "4 deliveries", func() bool { mu.Lock(); defer mu.Unlock(); return len(got) >= 4 })
		time.Sleep(200 * time.Millisecond)
		mu.Lock()
		defer mu.Unlock()
		if want := []string{"m1", "m1", "m2", "m3"}; !slices.Equal(got, want) {
			t.Errorf("delivered %v, want %v", got, want)
		}
		if h.count() != 1 {
			t.Errorf("%d replies lost, want the claim's", h.count())
		}
	})
}

// Replies of reads, claims and acks are lost at random, some
// retried by the client: every actor still gets each of its messages once,
// in order. LOSTREPLY_SEED replays a run.
func TestRandomLostRepliesKeepOrder(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("LOSTREPLY_SEED"); s != "" {
		seed, _ = strconv.ParseUint(s, 10, 64)
	}
	t.Logf("seed %d (LOSTREPLY_SEED=%d replays it)", seed, seed)
	var rmu sync.Mutex
	rng := rand.New(rand.NewPCG(seed, 1))
	scripts := []string{redis.ReadScriptSHA, redis.ClaimScriptSHA, redis.AckScriptSHA}
	h := newReplyLoss(func(cmd goredis.Cmder) bool {
		if !slices.ContainsFunc(scripts, func(sha string) bool { return isScript(cmd, sha) }) {
			return false
		}
		rmu.Lock()
		defer rmu.Unlock()
		return rng.IntN(4) == 0
	})

	name := freshMailbox(t)
	mb := open(t, name, redis.Options{Partitions: 1})
	const actors, each = 4, 40
	publish := func(from, to int) {
		var msgs []channel.Message
		for i := from; i < to; i++ {
			for a := range actors {
				id := fmt.Sprintf("a%d-%03d", a, i)
				msgs = append(msgs, channel.Message{ID: id, Address: channel.Address{Type: "t", ID: strconv.Itoa(a)}})
			}
		}
		if err := mb.Publisher().Publish(t.Context(), msgs...); err != nil {
			t.Fatal(err)
		}
	}
	publish(0, each/2)
	opts := testConsumerOptions
	opts.BatchSize = 5
	r := backendtest.Record(t, lossyMailbox(t, name, h).Consumer(opts), true)
	for i := each / 2; i < each; i += 4 {
		publish(i, i+4)
		time.Sleep(5 * time.Millisecond)
	}
	deadline := time.Now().Add(30 * time.Second)
	for len(r.Received()) < actors*each && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond)
	per := make(map[string][]string)
	for _, m := range r.Received() {
		per[m.Address.ID] = append(per[m.Address.ID], m.ID)
	}
	for a := range actors {
		var want []string
		for i := range each {
			want = append(want, fmt.Sprintf("a%d-%03d", a, i))
		}
		if got := per[strconv.Itoa(a)]; !slices.Equal(got, want) {
			t.Errorf("actor t/%d received %v, want %v", a, got, want)
		}
	}
	t.Logf("%d replies lost", h.count())
	if !t.Failed() {
		waitEmpty(t, name)
	}
}
