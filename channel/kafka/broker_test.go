package kafka

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/postbox-dev/postbox/channel"
	"github.com/postbox-dev/postbox/internal/testenv"
	"github.com/postbox-dev/postbox/internal/waitfor"
)

// These tests run against the brokers in KAFKA_BROKERS (host:port,...);
// scripts/kafka.sh start runs one and prints the value.

// fastOptions keep group changes and commits quick in tests.
func fastOptions() Options {
	return Options{
		CommitInterval: 100 * time.Millisecond,
		RevokeTimeout:  2 * time.Second,
		FetchMaxWait:   100 * time.Millisecond,
		SessionTimeout: 10 * time.Second,
	}
}

// setup marks t parallel and returns the brokers and a new topic with the
// given partitions (see newTopic).
func setup(t *testing.T, partitions int32) ([]string, string) {
	t.Helper()
	t.Parallel()
	brokers := testenv.Kafka(t)
	return brokers, newTopic(t, brokers, partitions)
}

// newTopic creates a unique topic (and its DLQ topic) for this test and
// deletes both when it ends.
func newTopic(t *testing.T, brokers []string, partitions int32) string {
	t.Helper()
	var b [4]byte
	_, _ = rand.Read(b[:])
	name := strings.NewReplacer("/", ".", " ", "_").Replace(t.Name())
	topic := "postbox-test." + name + "." + hex.EncodeToString(b[:])
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := EnsureTopics(ctx, brokers, topic, partitions, 1); err != nil {
		t.Fatal(err)
	}
	adm := admin(t, brokers) // closed after the cleanup below
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, _ = adm.DeleteTopics(ctx, topic, DLQTopic(topic))
	})
	return topic
}

func publish(t *testing.T, brokers []string, topic string, msgs ...channel.Message) []channel.Message {
	t.Helper()
	p, err := OpenPublisher(brokers, topic, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := p.Publish(ctx, msgs...); err != nil {
		t.Fatal(err)
	}
	return msgs
}

func msg(addr string, payload string) channel.Message {
	a, err := channel.ParseAddress(addr)
	if err != nil {
		panic(err)
	}
	return channel.Message{Address: a, Payload: []byte(payload), Headers: map[string]string{"test": payload}}
}

// numbered is n messages to addr, with the payloads 0 to n-1.
func numbered(addr string, n int) []channel.Message {
	msgs := make([]channel.Message, n)
	for i := range msgs {
		msgs[i] = msg(addr, fmt.Sprint(i))
	}
	return msgs
}

// delivery is one message a testHost got, with the claim it came on.
type delivery struct {
	claim *claim
	msg   channel.Message
}

// testHost runs a Consumer the way the actor host does: each claim is read
// in its own goroutine until Messages closes, then released. Deliveries go
// to one channel for the test to read.
type testHost struct {
	t          *testing.T
	c          *Consumer
	deliveries chan delivery
	quit       chan struct{}
	done       chan error

	mu     sync.Mutex
	claims []*claim
}

func startHost(t *testing.T, brokers []string, topic string, opts Options) *testHost {
	t.Helper()
	c, err := OpenConsumer(brokers, topic, opts)
	if err != nil {
		t.Fatal(err)
	}
	h := &testHost{
		t:          t,
		c:          c,
		deliveries: make(chan delivery, 10000),
		quit:       make(chan struct{}),
		done:       make(chan error, 1),
	}
	go func() { h.done <- c.Run(context.Background(), h.onClaim) }()
	t.Cleanup(h.stop)
	return h
}

func (h *testHost) onClaim(cl channel.Claim) {
	c := cl.(*claim)
	h.mu.Lock()
	h.claims = append(h.claims, c)
	h.mu.Unlock()
	for m := range c.Messages() {
		select {
		case h.deliveries <- delivery{c, m}:
		case <-h.quit:
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Release(ctx); err != nil {
		h.t.Errorf("Release of partition %d: %v", c.partition, err)
	}
}

// stop closes the consumer and checks that Run returned nil, with every
// claim ended.
func (h *testHost) stop() {
	h.t.Helper()
	select {
	case <-h.quit:
		return
	default:
	}
	closed := make(chan struct{})
	go func() {
		h.c.Close()
		close(closed)
	}()
	select {
	case <-closed:
	case <-time.After(60 * time.Second):
		h.t.Fatal("Consumer.Close did not return within 60s")
	}
	close(h.quit)
	if err := <-h.done; err != nil {
		h.t.Errorf("Run = %v, want nil after Close", err)
	}
	for _, c := range h.allClaims() {
		select {
		case <-c.stop:
		default:
			h.t.Errorf("claim of partition %d still delivering after Run returned", c.partition)
		}
	}
}

func (h *testHost) allClaims() []*claim {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]*claim(nil), h.claims...)
}

// next returns the next delivery, failing the test after timeout.
func (h *testHost) next(timeout time.Duration) delivery {
	h.t.Helper()
	select {
	case d := <-h.deliveries:
		return d
	case <-time.After(timeout):
		h.t.Fatalf("no message within %v", timeout)
	}
	panic("unreachable")
}

// none checks that nothing is delivered for d.
func (h *testHost) none(d time.Duration) {
	h.t.Helper()
	select {
	case got := <-h.deliveries:
		h.t.Fatalf("unexpected delivery %s at partition %d offset %d", got.msg.ID, got.msg.Partition, got.msg.Offset)
	case <-time.After(d):
	}
}

func TestPublishConsumeInOrder(t *testing.T) {
	brokers, topic := setup(t, 4)

	var msgs []channel.Message
	for i := range 20 {
		for a := range 5 {
			msgs = append(msgs, msg(fmt.Sprintf("counter/%d", a), fmt.Sprint(i)))
		}
	}
	msgs[0].ID = "chosen-id"
	publish(t, brokers, topic, msgs[:50]...)
	publish(t, brokers, topic, msgs[50:]...)
	byID := make(map[string]channel.Message)
	for _, m := range msgs {
		if m.ID == "" {
			t.Fatal("Publish left an ID empty")
		}
		byID[m.ID] = m
	}
	if len(byID) != len(msgs) {
		t.Fatalf("%d distinct IDs for %d messages", len(byID), len(msgs))
	}

	h := startHost(t, brokers, topic, fastOptions())
	seen := make(map[string]int) // address → last payload number
	for range msgs {
		d := h.next(30 * time.Second)
		m := d.msg
		want, ok := byID[m.ID]
		if !ok {
			t.Fatalf("delivered unknown ID %q", m.ID)
		}
		delete(byID, m.ID)
		addr := m.Address.String()
		if addr != want.Address.String() || string(m.Payload) != string(want.Payload) || m.Headers["test"] != string(want.Payload) {
			t.Fatalf("delivered %+v, published %+v", m, want)
		}
		if home := channel.HomePartition(addr, 4); m.Partition != home || d.claim.Partition() != home {
			t.Fatalf("%s on partition %d (claim %d), home is %d", addr, m.Partition, d.claim.Partition(), home)
		}
		if _, foreign := m.Headers[HeaderForeign]; foreign || m.Mailbox != topic || m.PublishedAt.IsZero() {
			t.Fatalf("delivered %+v", m)
		}
		var n int
		fmt.Sscan(string(m.Payload), &n)
		if last, ok := seen[addr]; ok && n != last+1 {
			t.Fatalf("%s: message %d after %d", addr, n, last)
		} else if !ok && n != 0 {
			t.Fatalf("%s: first message is %d", addr, n)
		}
		seen[addr] = n
	}
	h.none(300 * time.Millisecond)
}

func TestCommitAtAck(t *testing.T) {
	brokers, topic := setup(t, 2)
	msgs := publish(t, brokers, topic, numbered("counter/1", 10)...)

	h1 := startHost(t, brokers, topic, fastOptions())
	var got []delivery
	for range msgs {
		got = append(got, h1.next(30*time.Second))
	}
	ctx := context.Background()
	for _, d := range got[:4] {
		if err := d.claim.Ack(ctx, d.msg); err != nil {
			t.Fatal(err)
		}
	}
	h1.stop() // revokes, the host releases, acks are committed

	if off, ok := committedOffset(t, brokers, topic, got[0].msg.Partition); !ok || off != got[3].msg.Offset+1 {
		t.Fatalf("committed offset %d (%v), want %d", off, ok, got[3].msg.Offset+1)
	}

	h2 := startHost(t, brokers, topic, fastOptions())
	for _, want := range msgs[4:] {
		if d := h2.next(30 * time.Second); d.msg.ID != want.ID {
			t.Fatalf("after restart got %s (%s), want %s (%s)", d.msg.ID, d.msg.Payload, want.ID, want.Payload)
		}
	}
	h2.none(300 * time.Millisecond)
}

func TestRebalanceRedeliversUnacked(t *testing.T) {
	brokers, topic := setup(t, 4)
	var msgs []channel.Message
	for i := range 40 {
		msgs = append(msgs, msg(fmt.Sprintf("counter/%d", i), "x"))
	}
	publish(t, brokers, topic, msgs...)

	a := startHost(t, brokers, topic, fastOptions())
	byPartition := make(map[int32][]string) // IDs A got, in order
	for range msgs {
		d := a.next(30 * time.Second)
		byPartition[d.msg.Partition] = append(byPartition[d.msg.Partition], d.msg.ID)
	}
	// A acks the first message of every partition, and nothing else.
	ctx := context.Background()
	for _, c := range a.allClaims() {
		ids := byPartition[c.partition]
		if len(ids) == 0 {
			continue
		}
		first := channel.Message{Mailbox: topic, Partition: c.partition, Offset: 0}
		if err := c.Ack(ctx, first); err != nil {
			t.Fatal(err)
		}
	}

	b := startHost(t, brokers, topic, fastOptions())
	// B gets some partitions; for each, everything but the acked first
	// message again, with the same IDs and in the same order.
	waitfor.Until(t, 60*time.Second, "B owns partitions", func() bool { return len(b.allClaims()) > 0 })
	var moved []int32
	waitfor.Until(t, 30*time.Second, "the group settles", func() bool {
		moved = moved[:0]
		for _, c := range b.allClaims() {
			moved = append(moved, c.partition)
		}
		return len(moved) == 2
	})
	want := make(map[string]bool)
	for _, p := range moved {
		for _, id := range byPartition[p][1:] {
			want[id] = true
		}
	}
	for len(want) > 0 {
		d := b.next(30 * time.Second)
		if !want[d.msg.ID] {
			t.Fatalf("B got %s on partition %d, not an unacked message of a moved partition", d.msg.ID, d.msg.Partition)
		}
		delete(want, d.msg.ID)
	}
	b.none(300 * time.Millisecond)
	// A's claims of the moved partitions ended: Messages closed, released.
	for _, c := range a.allClaims() {
		for _, p := range moved {
			if c.partition != p {
				continue
			}
			select {
			case <-c.released:
			case <-time.After(5 * time.Second):
				t.Errorf("A's claim of moved partition %d was not released", p)
			}
		}
	}
}

func TestReleaseCommitsWhatWasAcked(t *testing.T) {
	brokers, topic := setup(t, 1)
	msgs := publish(t, brokers, topic, msg("counter/a", "a1"), msg("counter/a", "a2"), msg("counter/b", "b1"))

	cl := singleClaim(t, brokers, topic, fastOptions())
	ctx := context.Background()
	var got []channel.Message
	for i := range msgs {
		m := recv(t, cl, 30*time.Second)
		if m.ID != msgs[i].ID {
			t.Fatalf("got %s, want %s", m.Payload, msgs[i].Payload)
		}
		got = append(got, m)
	}
	// The host acks in offset order up to its watermark: a1, a2, not b1.
	if err := cl.Ack(ctx, got[0], got[1]); err != nil {
		t.Fatal(err)
	}
	if err := cl.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if err := cl.Ack(ctx, got[2]); !errors.Is(err, errReleased) {
		t.Fatalf("Ack after Release = %v, want errReleased", err)
	}
	if off, _ := committedOffset(t, brokers, topic, 0); off != 2 {
		t.Fatalf("committed offset %d, want 2", off)
	}
}

// singleClaim runs a Consumer of a one-partition topic and returns its claim,
// for the test to read directly. The consumer closes when the test ends.
func singleClaim(t *testing.T, brokers []string, topic string, opts Options) *claim {
	t.Helper()
	c, err := OpenConsumer(brokers, topic, opts)
	if err != nil {
		t.Fatal(err)
	}
	claims := make(chan *claim, 1)
	done := make(chan error, 1)
	go func() {
		done <- c.Run(context.Background(), func(cl channel.Claim) { claims <- cl.(*claim) })
	}()
	t.Cleanup(func() {
		c.Close()
		if err := <-done; err != nil {
			t.Errorf("Run = %v", err)
		}
	})
	select {
	case cl := <-claims:
		return cl
	case err := <-done:
		t.Fatalf("Run = %v before any claim", err)
	case <-time.After(30 * time.Second):
		t.Fatal("no claim within 30s")
	}
	panic("unreachable")
}

// admin returns an admin client of brokers, closed when t ends.
func admin(t *testing.T, brokers []string) *kadm.Client {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return kadm.NewClient(cl)
}

// committedOffset returns the group's committed offset of a partition.
func committedOffset(t *testing.T, brokers []string, topic string, partition int32) (int64, bool) {
	t.Helper()
	offs, err := admin(t, brokers).FetchOffsets(callCtx(t), "postbox."+topic)
	if err != nil {
		t.Fatal(err)
	}
	o, ok := offs.Lookup(topic, partition)
	return o.At, ok
}

func TestBackpressurePausesAndLosesNothing(t *testing.T) {
	brokers, topic := setup(t, 1)
	msgs := publish(t, brokers, topic, numbered("counter/1", 300)...)

	opts := fastOptions()
	opts.BufferSize = 8
	cl := singleClaim(t, brokers, topic, opts)
	buffered := func() (int, bool) {
		cl.mu.Lock()
		defer cl.mu.Unlock()
		return len(cl.pending), cl.paused
	}
	waitfor.Until(t, 30*time.Second, "fetching pauses", func() bool { _, p := buffered(); return p })
	// Give the fetcher time to overrun the buffer, were it still fetching.
	time.Sleep(500 * time.Millisecond)
	if n, _ := buffered(); n > 2*opts.BufferSize {
		t.Fatalf("%d messages buffered with BufferSize %d: fetching did not pause", n, opts.BufferSize)
	}
	for i := int64(0); i < int64(len(msgs)); i++ {
		select {
		case m := <-cl.Messages():
			if m.Offset != i || m.ID != msgs[i].ID {
				t.Fatalf("got offset %d (%s), want %d", m.Offset, m.ID, i)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("offset %d not delivered within 30s", i)
		}
	}
	if err := cl.Release(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// foreignRecord is a record the test writes off its key's home partition.
type foreignRecord struct {
	key, payload string
	id           string // the ID the consumer must deliver it under
	headers      map[string]string
}

// produceForeign writes, with a plain franz-go producer choosing partitions
// by hand, n records per key, each key's records on one partition other than
// its home, numbered 0..n-1 in the payload, without headers; and, when
// withHeaders, one more for the first key carrying an ID and a header. It
// returns what the consumer must deliver.
func produceForeign(t *testing.T, brokers []string, topic string, partitions int, keys []string, n int, withHeaders bool) []foreignRecord {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var recs []*kgo.Record
	for k, key := range keys {
		home := channel.HomePartition(key, partitions)
		p := (home + 1 + int32(k%(partitions-1))) % int32(partitions)
		for i := range n {
			recs = append(recs, &kgo.Record{Topic: topic, Key: []byte(key), Partition: p, Value: []byte(fmt.Sprint(i))})
		}
	}
	if withHeaders {
		home := channel.HomePartition(keys[0], partitions)
		recs = append(recs, &kgo.Record{
			Topic: topic, Key: []byte(keys[0]), Partition: (home + 1) % int32(partitions), Value: []byte(fmt.Sprint(n)),
			Headers: []kgo.RecordHeader{{Key: HeaderID, Value: []byte("given-id")}, {Key: "trace", Value: []byte("t1")}},
		})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	want := make([]foreignRecord, len(recs))
	for i, r := range recs {
		if channel.HomePartition(string(r.Key), partitions) == r.Partition {
			t.Fatalf("test record %s landed on its home partition", r.Key)
		}
		want[i] = foreignRecord{key: string(r.Key), payload: string(r.Value), headers: map[string]string{},
			id: fmt.Sprintf("%s/%d/%d", topic, r.Partition, r.Offset)}
		for _, h := range r.Headers {
			if h.Key == HeaderID {
				want[i].id = string(h.Value)
			} else {
				want[i].headers[h.Key] = string(h.Value)
			}
		}
	}
	return want
}

// receiveForwarded reads len(want) deliveries from h and checks that each is
// a wanted record, delivered once, from its home partition, under the
// wanted ID, with its headers, and that each key's records come in order.
func receiveForwarded(t *testing.T, h *testHost, partitions int, want []foreignRecord) []delivery {
	t.Helper()
	byID := make(map[string]foreignRecord)
	for _, w := range want {
		byID[w.id] = w
	}
	next := make(map[string]int) // key → next payload number
	var got []delivery
	for range want {
		d := h.next(30 * time.Second)
		m := d.msg
		w, ok := byID[m.ID]
		if !ok {
			t.Fatalf("delivered %q (partition %d, payload %s): not a wanted ID, or delivered twice", m.ID, m.Partition, m.Payload)
		}
		delete(byID, m.ID)
		home := channel.HomePartition(w.key, partitions)
		if m.Partition != home || d.claim.Partition() != home || m.Address.String() != w.key || string(m.Payload) != w.payload {
			t.Fatalf("delivered %s as %s/%s on partition %d (claim %d); want %s/%s on home partition %d",
				m.ID, m.Address, m.Payload, m.Partition, d.claim.Partition(), w.key, w.payload, home)
		}
		if !maps.Equal(m.Headers, w.headers) {
			t.Fatalf("delivered %s with headers %v, want %v", m.ID, m.Headers, w.headers)
		}
		if p := fmt.Sprint(next[w.key]); string(m.Payload) != p {
			t.Fatalf("%s: record %s delivered when %s was next: order lost", w.key, m.Payload, p)
		}
		next[w.key]++
		got = append(got, d)
	}
	return got
}

// ackAll acks deliveries claim by claim, in offset order, as the host does.
func ackAll(t *testing.T, ds []delivery) {
	t.Helper()
	byClaim := make(map[*claim][]channel.Message)
	for _, d := range ds {
		byClaim[d.claim] = append(byClaim[d.claim], d.msg)
	}
	for c, msgs := range byClaim {
		slices.SortFunc(msgs, func(a, b channel.Message) int { return cmp.Compare(a.Offset, b.Offset) })
		if err := c.Ack(context.Background(), msgs...); err != nil {
			t.Fatal(err)
		}
	}
}

// endOffsets returns the high watermark of every partition of topic.
func endOffsets(t *testing.T, brokers []string, topic string) map[int32]int64 {
	t.Helper()
	offs, err := admin(t, brokers).ListEndOffsets(callCtx(t), topic)
	if err != nil {
		t.Fatal(err)
	}
	ends := make(map[int32]int64)
	offs.Each(func(o kadm.ListedOffset) { ends[o.Partition] = o.Offset })
	return ends
}

func TestForeignRecordsAreForwardedHome(t *testing.T) {
	const partitions = 4
	brokers, topic := setup(t, partitions)
	keys := []string{"counter/0", "counter/1", "counter/2", "counter/3", "counter/4", "counter/5"}
	want := produceForeign(t, brokers, topic, partitions, keys, 5, true)
	// A record already at home, next to them.
	plain := publish(t, brokers, topic, msg("counter/9", "0"))[0]
	want = append(want, foreignRecord{key: "counter/9", payload: "0", id: plain.ID, headers: map[string]string{"test": "0"}})

	h := startHost(t, brokers, topic, fastOptions())
	got := receiveForwarded(t, h, partitions, want)
	h.none(500 * time.Millisecond)

	ackAll(t, got)
	h.stop()
	// Every partition is committed to its end: the originals as forwarded,
	// the copies and the plain record as acked.
	for p, end := range endOffsets(t, brokers, topic) {
		if off, _ := committedOffset(t, brokers, topic, p); off != end {
			t.Errorf("partition %d: committed %d, want its end %d", p, off, end)
		}
	}
	again := startHost(t, brokers, topic, fastOptions())
	again.none(time.Second)
}

func TestForwardedRecordsKeepTheirIDsAcrossRestarts(t *testing.T) {
	const partitions = 4
	brokers, topic := setup(t, partitions)
	keys := []string{"counter/a", "counter/b", "counter/c"}
	want := produceForeign(t, brokers, topic, partitions, keys, 4, false)

	// The host stops before acking anything: the copies are delivered again,
	// under the same IDs, and the originals are not forwarded twice (their
	// offsets were committed once forwarded).
	h1 := startHost(t, brokers, topic, fastOptions())
	receiveForwarded(t, h1, partitions, want)
	h1.stop()
	h2 := startHost(t, brokers, topic, fastOptions())
	receiveForwarded(t, h2, partitions, want)
	h2.none(500 * time.Millisecond)
	h2.stop()

	// A consumer that never committed (here: another group) forwards the
	// originals again, under the same IDs: each arrives twice, as the first
	// copy and the second, and the host's dedup keeps one.
	opts := fastOptions()
	opts.Group = "postbox-test.other." + topic
	h3 := startHost(t, brokers, topic, opts)
	seen := make(map[string]int)
	for range 2 * len(want) {
		d := h3.next(30 * time.Second)
		seen[d.msg.ID]++
		if home := channel.HomePartition(d.msg.Address.String(), partitions); d.msg.Partition != home {
			t.Fatalf("%s delivered from partition %d, home is %d", d.msg.ID, d.msg.Partition, home)
		}
	}
	for _, w := range want {
		if seen[w.id] != 2 {
			t.Errorf("%s delivered %d times after forwarding twice, want 2", w.id, seen[w.id])
		}
	}
	h3.none(500 * time.Millisecond)
}

func TestForwardedCopyOffHomeIsDeliveredNotForwardedAgain(t *testing.T) {
	const partitions = 2
	brokers, topic := setup(t, partitions)
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	// As a consumer that counts partitions differently would have written it.
	off := 1 - channel.HomePartition("counter/1", partitions)
	err = cl.ProduceSync(context.Background(), &kgo.Record{
		Topic: topic, Key: []byte("counter/1"), Partition: off, Value: []byte("x"),
		Headers: []kgo.RecordHeader{{Key: HeaderID, Value: []byte("m1")}, {Key: HeaderForwardedFrom, Value: []byte("elsewhere/3/7")}},
	}).FirstErr()
	if err != nil {
		t.Fatal(err)
	}
	h := startHost(t, brokers, topic, fastOptions())
	d := h.next(30 * time.Second)
	if d.msg.ID != "m1" || d.msg.Partition != off || len(d.msg.Headers) != 0 {
		t.Fatalf("delivered %s on partition %d with headers %v; want m1 where it is, %d, without headers", d.msg.ID, d.msg.Partition, d.msg.Headers, off)
	}
	h.none(500 * time.Millisecond)
	if ends := endOffsets(t, brokers, topic); ends[0]+ends[1] != 1 {
		t.Fatalf("end offsets %v: the record was written again", ends)
	}
}

func TestEnsureTopics(t *testing.T) {
	brokers, topic := setup(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// Again: a no-op, even with another partition count.
	if err := EnsureTopics(ctx, brokers, topic, 5, 1); err != nil {
		t.Fatal(err)
	}
	details, err := admin(t, brokers).ListTopics(ctx, topic, DLQTopic(topic))
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{topic, DLQTopic(topic)} {
		if d := details[name]; d.Err != nil || len(d.Partitions) != 3 {
			t.Errorf("%s: %d partitions, err %v; want 3", name, len(d.Partitions), d.Err)
		}
	}

	if got := topicConfig(t, brokers, DLQTopic(topic), "cleanup.policy"); got != "compact" {
		t.Errorf("%s: cleanup.policy=%s, want compact", DLQTopic(topic), got)
	}
	if got := topicConfig(t, brokers, topic, "cleanup.policy"); got != "delete" {
		t.Errorf("%s: cleanup.policy=%s, want the default, delete", topic, got)
	}

	err = EnsureTopics(ctx, brokers, topic+"-r3", 1, 3)
	if err == nil || !strings.Contains(err.Error(), "fewer brokers than the replication factor") {
		t.Errorf("replication 3 on one broker: %v, want an error explaining it", err)
	}
}

func TestRunFailsOnMissingTopic(t *testing.T) {
	t.Parallel()
	brokers := testenv.Kafka(t)
	c, err := OpenConsumer(brokers, "postbox-test.no-such-topic", fastOptions())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err = c.Run(ctx, func(channel.Claim) { t.Error("claim of a missing topic") })
	if err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Fatalf("Run = %v, want an error saying the topic does not exist", err)
	}
	if err := c.Run(ctx, func(channel.Claim) {}); err == nil {
		t.Fatal("second Run accepted")
	}
	c.Close()
	if err := c.Run(ctx, func(channel.Claim) {}); !errors.Is(err, channel.ErrClosed) {
		t.Fatalf("Run after Close = %v, want ErrClosed", err)
	}
}
