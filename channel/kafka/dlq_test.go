package kafka

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/postbox-dev/postbox/channel"
	"github.com/postbox-dev/postbox/dlq"
	"github.com/postbox-dev/postbox/dlq/dlqtest"
	"github.com/postbox-dev/postbox/internal/testenv"
)

func openDLQ(t *testing.T, brokers []string, topic string) *DeadLetters {
	t.Helper()
	d, err := OpenDLQ(brokers, topic, fastOptions())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// callCtx bounds one call on the queue.
func callCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

var dlqBase = time.Date(2025, 1, 2, 3, 4, 5, 123456789, time.UTC)

// deadLetterOf is a dead letter of the message msgID to addr from offset.
func deadLetterOf(topic, msgID, addr string, offset int64, at time.Time) dlq.Envelope {
	return dlq.Envelope{
		MessageID: msgID, Address: addr, Payload: []byte(fmt.Sprint(offset)), Headers: map[string]string{"h": "v"},
		Source:   dlq.Source{Backend: "kafka", Mailbox: topic, Partition: channel.HomePartition(addr, 4), Offset: offset},
		Attempts: 1, Errors: []dlq.AttemptError{{Attempt: 1, Error: "boom", At: at}},
		Reason: "permanent error", Worker: "w1", DeadLetteredAt: at,
	}
}

func listIDs(t *testing.T, d *DeadLetters) []string {
	t.Helper()
	envs, err := d.List(callCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	ids := make([]string, len(envs))
	for i, e := range envs {
		ids[i] = e.MessageID
	}
	return ids
}

func TestDLQConformance(t *testing.T) {
	t.Parallel()
	brokers := testenv.Kafka(t)
	dlqtest.Run(t, func(t *testing.T) dlqtest.Harness {
		const partitions = 4
		topic := newTopic(t, brokers, partitions)
		var h *testHost
		return dlqtest.Harness{
			Store:      openDLQ(t, brokers, topic),
			Backend:    "kafka",
			Mailbox:    topic,
			Partitions: partitions,
			Next: func(t *testing.T, n int) []channel.Message {
				t.Helper()
				if h == nil { // started late: a new group reads the topic from its start
					h = startHost(t, brokers, topic, fastOptions())
				}
				msgs := make([]channel.Message, n)
				for i := range msgs {
					msgs[i] = h.next(30 * time.Second).msg
				}
				h.none(300 * time.Millisecond)
				return msgs
			},
		}
	})
}

// Kafka-specific: the ID derived from the message, an empty payload kept
// non-nil (a nil value would be a tombstone), a zero DeadLetteredAt set to
// now, the record as other tools see it, and ErrClosed after Close.
func TestDLQPutListGet(t *testing.T) {
	brokers, topic := setup(t, 3)
	d := openDLQ(t, brokers, topic)

	full := dlqtest.Full([]byte("p1"), dlq.Source{Backend: "kafka", Mailbox: topic, Partition: 2, Offset: 41, Published: dlqBase.Add(-time.Minute)})
	full.ID = "ignored"
	bare := dlq.Envelope{MessageID: "m2", Address: "counter/2", Attempts: 1, Reason: "permanent error",
		DeadLetteredAt: dlqBase.Add(-time.Hour)}
	for _, env := range []dlq.Envelope{full, bare} {
		if err := d.Put(callCtx(t), env); err != nil {
			t.Fatal(err)
		}
	}
	// Put again for m1, an hour later: the record read back is the newest.
	again := full
	again.Reason, again.DeadLetteredAt = "permanent error", dlqBase.Add(time.Hour)
	if err := d.Put(callCtx(t), again); err != nil {
		t.Fatal(err)
	}
	// A zero DeadLetteredAt becomes now.
	before := time.Now()
	if err := d.Put(callCtx(t), dlq.Envelope{MessageID: "m3", Address: "counter/3", Payload: []byte{}}); err != nil {
		t.Fatal(err)
	}

	envs, err := d.List(callCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	if len(envs) != 3 {
		t.Fatalf("List = %d dead letters, want 3 (m2, m1 once, m3): %+v", len(envs), envs)
	}
	wantFull := again
	wantFull.ID = dlq.IDOf("m1")
	wantBare := bare
	wantBare.ID, wantBare.Payload = dlq.IDOf("m2"), []byte{}
	for i, want := range []dlq.Envelope{wantBare, wantFull} {
		if !reflect.DeepEqual(envs[i], want) {
			t.Errorf("List[%d] =\n%+v\nwant\n%+v", i, envs[i], want)
		}
	}
	if m3 := envs[2]; m3.MessageID != "m3" || m3.DeadLetteredAt.Before(before.Add(-time.Second)) || m3.Payload == nil {
		t.Errorf("List[2] = %+v, want m3 dead-lettered about now with an empty payload", m3)
	}
	if got, err := d.Get(callCtx(t), wantFull.ID); err != nil || !reflect.DeepEqual(got, wantFull) {
		t.Errorf("Get(%s) = %+v, %v; want %+v", wantFull.ID, got, err, wantFull)
	}

	// What other tools see: the key and the provenance headers.
	raw := rawDLQRecords(t, brokers, topic)
	var last *kgo.Record
	for _, r := range raw {
		if string(r.Key) == wantFull.ID {
			last = r
		}
	}
	if last == nil {
		t.Fatalf("no record keyed %s in %s", wantFull.ID, DLQTopic(topic))
	}
	hs := make(map[string]string)
	for _, h := range last.Headers {
		hs[h.Key] = string(h.Value)
	}
	for k, v := range map[string]string{
		"postbox-id": "m1", "postbox-address": "counter/1", "postbox-source-topic": topic,
		"postbox-source-partition": "2", "postbox-source-offset": "41", "postbox-attempts": "3",
		"postbox-reason": "permanent error", "postbox-worker": "worker-1",
		"postbox-dead-lettered-at": "2025-01-02T04:04:05.123456789Z",
		"postbox-error-1":          "2025-01-02T03:04:02.123456789Z boom",
		"orig-trace":               "abc", "orig-orig-x": "y", "orig-empty": "",
	} {
		if got, ok := hs[k]; !ok || got != v {
			t.Errorf("header %s = %q (present %v), want %q", k, got, ok, v)
		}
	}
	if string(last.Value) != "p1" {
		t.Errorf("value %q, want the payload", last.Value)
	}

	d.Close()
	if err := d.Put(callCtx(t), full); !errors.Is(err, channel.ErrClosed) {
		t.Errorf("Put after Close: %v, want ErrClosed", err)
	}
	if _, err := d.List(callCtx(t)); !errors.Is(err, channel.ErrClosed) {
		t.Errorf("List after Close: %v, want ErrClosed", err)
	}
}

// A header name that is not UTF-8 is written as postbox-orig-raw-<hex>:
// Kafka header names are strings, which the broker's log cleaner decodes
// as UTF-8 when it rewrites a batch. Values stay raw bytes.
func TestDLQHeaderNamesNotUTF8(t *testing.T) {
	brokers, topic := setup(t, 1)
	d := openDLQ(t, brokers, topic)
	env := deadLetterOf(topic, "m\xff", "counter/\xfe", 3, dlqBase)
	env.Headers = map[string]string{"k\xff": "v\xfe\x00", "ok": "\x80"}
	if err := d.Put(callCtx(t), env); err != nil {
		t.Fatal(err)
	}
	raw := rawDLQRecords(t, brokers, topic)
	if len(raw) != 1 {
		t.Fatalf("%d records in %s, want 1", len(raw), DLQTopic(topic))
	}
	hs := make(map[string]string)
	for _, h := range raw[0].Headers {
		hs[h.Key] = string(h.Value)
	}
	for k, v := range map[string]string{
		"postbox-id": "m\xff", "postbox-address": "counter/\xfe",
		"postbox-orig-raw-6bff": "v\xfe\x00", "orig-ok": "\x80",
	} {
		if got, ok := hs[k]; !ok || got != v {
			t.Errorf("header %s = %+q (present %v), want %+q", k, got, ok, v)
		}
	}
	got, err := d.Get(callCtx(t), dlq.IDOf(env.MessageID))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got.Headers, env.Headers) {
		t.Errorf("headers read back %+q, want %+q", got.Headers, env.Headers)
	}
}

// rawDLQRecords reads every record of the dead-letter topic of topic.
func rawDLQRecords(t *testing.T, brokers []string, topic string) []*kgo.Record {
	t.Helper()
	ends := endOffsets(t, brokers, DLQTopic(topic))
	total := int64(0)
	for _, e := range ends {
		total += e
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(DLQTopic(topic)),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx := callCtx(t)
	var recs []*kgo.Record
	for int64(len(recs)) < total {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("read %d of %d records of %s", len(recs), total, DLQTopic(topic))
		}
		recs = append(recs, fs.Records()...)
	}
	return recs
}

// A dead letter that cannot be redriven can still be purged, and a message
// dead-lettered again after a purge is back in the queue: the purge's
// tombstone must not hide it.
func TestDLQPurge(t *testing.T) {
	brokers, topic := setup(t, 2)
	d := openDLQ(t, brokers, topic)
	if err := d.Put(callCtx(t), deadLetterOf(topic, "m1", "counter/m1", 0, dlqBase)); err != nil {
		t.Fatal(err)
	}
	bad := deadLetterOf(topic, "bad", "nokey", 9, dlqBase.Add(time.Minute))
	if err := d.Put(callCtx(t), bad); err != nil {
		t.Fatal(err)
	}
	if n, err := d.Redrive(callCtx(t), dlq.IDOf("bad")); err == nil || n != 0 || !strings.Contains(err.Error(), "purge") {
		t.Fatalf("Redrive of a dead letter without a valid address = %d, %v; want an error suggesting purge", n, err)
	}
	if n, err := d.Purge(callCtx(t), dlq.IDOf("bad")); err != nil || n != 1 {
		t.Fatalf("Purge(bad) = %d, %v; want 1", n, err)
	}
	if n, err := d.Purge(callCtx(t)); err != nil || n != 1 {
		t.Fatalf("Purge() = %d, %v; want 1", n, err)
	}
	if got := listIDs(t, d); len(got) != 0 {
		t.Fatalf("after purging all the queue holds %v", got)
	}
	if err := d.Put(callCtx(t), deadLetterOf(topic, "m2", "counter/m2", 1, dlqBase)); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(listIDs(t, d), ","); got != "m2" {
		t.Fatalf("after a new Put the queue holds %s, want m2", got)
	}
}

func TestDLQNeedsItsTopic(t *testing.T) {
	t.Parallel()
	brokers := testenv.Kafka(t)
	d := openDLQ(t, brokers, "postbox-test.no-such-topic")
	err := d.Put(callCtx(t), dlq.Envelope{MessageID: "m1", Address: "counter/1"})
	if err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Fatalf("Put to a missing topic = %v, want an error saying it does not exist", err)
	}
	if _, err := d.List(callCtx(t)); err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Fatalf("List of a missing topic = %v, want an error saying it does not exist", err)
	}
}

// topicConfig returns the value of a topic's config key.
func topicConfig(t *testing.T, brokers []string, topic, key string) string {
	t.Helper()
	rcs, err := admin(t, brokers).DescribeTopicConfigs(callCtx(t), topic)
	if err != nil {
		t.Fatal(err)
	}
	rc, err := rcs.On(topic, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range rc.Configs {
		if c.Key == key {
			return c.MaybeValue()
		}
	}
	return ""
}
