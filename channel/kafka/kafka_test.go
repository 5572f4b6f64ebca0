package kafka

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/postbox-dev/postbox/channel"
)

// These tests need no broker.

func TestHomePartitionerMatchesKafkaDefault(t *testing.T) {
	// kgo's default key partitioner is murmur2 with the high bit masked, as
	// Kafka's Java client computes it; HomePartitioner must agree with it.
	// (kgo.SaramaCompatHasher negates instead of masking, so it differs for
	// half of all keys.)
	ours := HomePartitioner().ForTopic("t")
	javaLike := kgo.StickyKeyPartitioner(nil).ForTopic("t")
	for _, n := range []int{1, 3, 12, 50} {
		for i := range 2000 {
			r := &kgo.Record{Key: []byte(fmt.Sprintf("counter/%d", i))}
			if got, want := ours.Partition(r, n), javaLike.Partition(r, n); got != want {
				t.Fatalf("key %s, %d partitions: HomePartitioner = %d, Kafka default = %d", r.Key, n, got, want)
			}
		}
	}
}

func TestMessageFromRecord(t *testing.T) {
	home := channel.HomePartition("counter/7", 12)
	r := &kgo.Record{
		Key: []byte("counter/7"), Value: []byte("x"), Topic: "mb", Partition: home, Offset: 41,
		Timestamp: time.Unix(100, 0),
		Headers: []kgo.RecordHeader{
			{Key: HeaderID, Value: []byte("m1")},
			{Key: "trace", Value: []byte("abc")},
			{Key: HeaderForeign, Value: []byte("1")}, // spoofed: ignored
		},
	}
	m := message(r)
	if m.ID != "m1" || m.Address != (channel.Address{Type: "counter", ID: "7"}) || string(m.Payload) != "x" ||
		m.Mailbox != "mb" || m.Partition != home || m.Offset != 41 || !m.PublishedAt.Equal(time.Unix(100, 0)) {
		t.Fatalf("message = %+v", m)
	}
	if len(m.Headers) != 1 || m.Headers["trace"] != "abc" {
		t.Fatalf("headers = %v, want only trace", m.Headers)
	}

	headerless := &kgo.Record{Key: []byte("counter/7"), Topic: "mb", Partition: home, Offset: 3}
	if m := message(headerless); m.ID != fmt.Sprintf("mb/%d/3", home) {
		t.Errorf("ID without header = %q, want topic/partition/offset", m.ID)
	}

	bad := message(&kgo.Record{Key: []byte("nokey"), Topic: "mb"})
	if bad.Address != (channel.Address{}) || bad.Headers[HeaderBadAddress] != "nokey" {
		t.Errorf("bad key: address %+v, headers %v", bad.Address, bad.Headers)
	}
}

func TestForwardRecord(t *testing.T) {
	home := channel.HomePartition("counter/7", 12)
	off := (home + 5) % 12
	at := time.UnixMilli(1700000000123)
	r := &kgo.Record{
		Topic: "mb", Partition: off, Offset: 9, Key: []byte("counter/7"), Value: []byte("v"), Timestamp: at,
		Headers: []kgo.RecordHeader{{Key: "trace", Value: []byte("abc")}, {Key: "x", Value: nil}},
	}
	if !foreign(r, 12) || foreign(r, 0) {
		t.Fatalf("foreign(partition %d of 12) = %v, with an unknown count %v", off, foreign(r, 12), foreign(r, 0))
	}
	f := forwardRecord(r, 12)
	var hs []string
	for _, h := range f.Headers {
		hs = append(hs, h.Key+"="+string(h.Value))
	}
	wantID := fmt.Sprintf("mb/%d/9", off)
	if got, want := strings.Join(hs, ","), HeaderID+"="+wantID+",trace=abc,x=,"+HeaderForwardedFrom+"="+wantID; got != want {
		t.Errorf("forwarded headers %s, want %s", got, want)
	}
	if f.Topic != "mb" || f.Partition != home || string(f.Key) != "counter/7" || string(f.Value) != "v" || !f.Timestamp.Equal(at) {
		t.Errorf("forwarded %+v", f)
	}
	f.Partition, f.Offset = home, 77 // as the consumer of the home partition fetches it
	if foreign(f, 12) || !forwardedBefore(f) || forwardedBefore(r) || messageID(f) != wantID {
		t.Errorf("the copy at home: foreign %v, forwarded before %v, ID %q; want false, true, %q",
			foreign(f, 12), forwardedBefore(f), messageID(f), wantID)
	}
	if m := message(f); m.ID != wantID || len(m.Headers) != 2 || m.Headers["trace"] != "abc" {
		t.Errorf("the copy delivered: ID %q, headers %v; want %q and the original's headers", m.ID, m.Headers, wantID)
	}

	// A record with an ID keeps it, once.
	r.Headers = append(r.Headers, kgo.RecordHeader{Key: HeaderID, Value: []byte("m1")})
	f = forwardRecord(r, 12)
	if messageID(f) != "m1" || len(f.Headers) != 4 || f.Headers[0].Key != HeaderID {
		t.Errorf("forwarded headers %v, want %s=m1 first, then the others", f.Headers, HeaderID)
	}
}

func TestRecordFromMessage(t *testing.T) {
	r := record(channel.Message{
		ID: "m1", Address: channel.Address{Type: "counter", ID: "7"}, Payload: []byte("x"),
		Headers: map[string]string{"b": "2", "a": "1", HeaderForeign: "1", HeaderID: "other"},
	})
	var hs []string
	for _, h := range r.Headers {
		hs = append(hs, h.Key+"="+string(h.Value))
	}
	if got, want := strings.Join(hs, ","), HeaderID+"=m1,a=1,b=2"; got != want || string(r.Key) != "counter/7" {
		t.Fatalf("record key %q headers %s, want counter/7 and %s", r.Key, got, want)
	}
}

func TestPublishRejectsBadAddress(t *testing.T) {
	p, err := OpenPublisher([]string{"127.0.0.1:1"}, "t", Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	for _, a := range []channel.Address{{}, {Type: "counter"}, {ID: "1"}, {Type: "a/b", ID: "c"}} {
		err := p.Publish(context.Background(), channel.Message{Address: a})
		if !errors.Is(err, channel.ErrBadAddress) {
			t.Errorf("Publish to %+v: %v, want ErrBadAddress", a, err)
		}
	}
	p.Close()
	err = p.Publish(context.Background(), channel.Message{Address: channel.Address{Type: "a", ID: "1"}})
	if !errors.Is(err, channel.ErrClosed) {
		t.Errorf("Publish after Close: %v, want ErrClosed", err)
	}
}

func TestOptionsValidate(t *testing.T) {
	cases := []struct {
		brokers []string
		topic   string
		opts    Options
		want    string
	}{
		{nil, "t", Options{}, "no brokers"},
		{[]string{"b:1"}, "a b", Options{}, "topic"},
		{[]string{"b:1"}, "t", Options{BufferSize: -1}, "BufferSize"},
		{[]string{"b:1"}, "t", Options{RevokeTimeout: time.Minute}, "RevokeTimeout"},
		{[]string{"b:1"}, "t", Options{FetchMaxWait: -time.Second}, "FetchMaxWait"},
	}
	for _, c := range cases {
		_, err := OpenConsumer(c.brokers, c.topic, c.opts)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("OpenConsumer(%v, %q, %+v) = %v, want an error naming %s", c.brokers, c.topic, c.opts, err, c.want)
		}
	}
	if _, err := OpenConsumer([]string{"b:1"}, "orders.v1", Options{}); err != nil {
		t.Errorf("defaults rejected: %v", err)
	}
}

// fuzzRecordHeaders turns three fuzzed key/value pairs into record headers,
// in order; a pair with an empty key and value is left out.
func fuzzRecordHeaders(kv ...any) []kgo.RecordHeader {
	var hs []kgo.RecordHeader
	for i := 0; i+1 < len(kv); i += 2 {
		k, v := kv[i].(string), kv[i+1].([]byte)
		if k == "" && len(v) == 0 {
			continue
		}
		hs = append(hs, kgo.RecordHeader{Key: k, Value: v})
	}
	return hs
}

// FuzzMessage checks how a fetched record becomes a channel.Message
// (message, messageID), how the consumer forwards a foreign record
// (forwardRecord) and how the publisher builds a record (record), for
// arbitrary keys and headers: nothing panics, the ID is the last HeaderID
// or "topic/partition/offset" when that is missing or empty, a key that is
// not "type/id" leaves a zero Address and sets HeaderBadAddress, the
// headers this package sets are dropped, a forwarded copy keeps the
// message ID and headers, and record → message gives the message back.
func FuzzMessage(f *testing.F) {
	none := []byte(nil)
	f.Add([]byte("counter/7"), []byte("x"), int64(41), uint8(12),
		HeaderID, []byte("m1"), "trace", []byte("abc"), HeaderForeign, []byte("1"))
	f.Add([]byte("counter/7"), []byte{}, int64(3), uint8(12), "", none, "", none, "", none)
	f.Add([]byte("nokey"), []byte("v"), int64(0), uint8(1),
		HeaderBadAddress, []byte("spoofed"), HeaderForwardedFrom, []byte("t/0/1"), "x", none)
	f.Add([]byte("counter/7"), []byte("v"), int64(9), uint8(12),
		HeaderID, []byte("m1"), "trace", []byte("abc"), HeaderID, []byte{}) // last ID empty
	f.Add([]byte("counter/7"), []byte("v"), int64(9), uint8(12),
		HeaderID, []byte("first"), HeaderID, []byte("second"), "t", []byte("\x00"))
	f.Add([]byte("\xff\xfe/\x00"), []byte("\x00\xff"), int64(-1), uint8(255),
		"\x00", []byte("\xff"), "\xc3\x28", []byte("\x00\x00"), "trace", []byte("a"))
	f.Add([]byte(""), []byte(nil), int64(1<<62), uint8(0), "", none, "", none, "", none)
	f.Add([]byte("/7"), []byte("v"), int64(5), uint8(3), "a", []byte("1"), "a", []byte("2"), "", none)

	f.Fuzz(func(t *testing.T, key, value []byte, offset int64, parts uint8,
		k1 string, v1 []byte, k2 string, v2 []byte, k3 string, v3 []byte) {
		partitions := int(parts)%64 + 1
		r := &kgo.Record{
			Topic:     "mb",
			Partition: int32(offset&0xff) % int32(partitions),
			Offset:    offset,
			Key:       key,
			Value:     value,
			Headers:   fuzzRecordHeaders(k1, v1, k2, v2, k3, v3),
			Timestamp: time.UnixMilli(offset & 0xffffffffff),
		}

		// What the documentation says the message must be.
		fallback := fmt.Sprintf("%s/%d/%d", r.Topic, r.Partition, r.Offset)
		wantID := ""
		wantHeaders := map[string]string{}
		for _, h := range r.Headers {
			switch h.Key {
			case HeaderID:
				wantID = string(h.Value)
			case HeaderForeign, HeaderBadAddress, HeaderForwardedFrom:
			default:
				wantHeaders[h.Key] = string(h.Value)
			}
		}
		if wantID == "" {
			wantID = fallback
		}
		wantAddr, addrErr := channel.ParseAddress(string(key))
		if addrErr != nil {
			wantHeaders[HeaderBadAddress] = string(key)
		}

		m := message(r)
		if m.ID != wantID || messageID(r) != wantID {
			t.Fatalf("ID %q (messageID %q), want %q", m.ID, messageID(r), wantID)
		}
		if m.Address != wantAddr {
			t.Fatalf("address %+v, want %+v (key %q)", m.Address, wantAddr, key)
		}
		if addrErr == nil && m.Address.String() != string(key) {
			t.Fatalf("address %+v does not print as its key %q", m.Address, key)
		}
		if m.Headers == nil || !maps.Equal(m.Headers, wantHeaders) {
			t.Fatalf("headers %q, want %q", m.Headers, wantHeaders)
		}
		if !bytes.Equal(m.Payload, value) || m.Mailbox != r.Topic || m.Partition != r.Partition ||
			m.Offset != r.Offset || !m.PublishedAt.Equal(r.Timestamp) {
			t.Fatalf("message %+v from record %+v", m, r)
		}

		// The consumer's copy of a foreign record, as its home partition's
		// consumer fetches it.
		fw := forwardRecord(r, partitions)
		if fw.Partition < 0 || int(fw.Partition) >= partitions || foreign(fw, partitions) {
			t.Fatalf("forwarded to partition %d of %d, home %d", fw.Partition, partitions, channel.HomePartition(string(key), partitions))
		}
		if n := len(fw.Headers); n < 2 || fw.Headers[0].Key != HeaderID || fw.Headers[n-1].Key != HeaderForwardedFrom ||
			string(fw.Headers[n-1].Value) != fallback || !forwardedBefore(fw) {
			t.Fatalf("forwarded headers %q: want %s first and %s=%s last", fw.Headers, HeaderID, HeaderForwardedFrom, fallback)
		}
		ids := 0
		for _, h := range fw.Headers {
			if h.Key == HeaderID {
				ids++
			}
		}
		if ids != 1 {
			t.Fatalf("forwarded headers %q carry %d %s", fw.Headers, ids, HeaderID)
		}
		fw.Offset = offset ^ 0x5a5a // wherever it lands
		fm := message(fw)
		if fm.ID != m.ID || fm.Address != m.Address || !maps.Equal(fm.Headers, m.Headers) || !bytes.Equal(fm.Payload, m.Payload) {
			t.Fatalf("forwarded copy delivers %+v, the original %+v", fm, m)
		}
		if again := forwardRecord(fw, partitions); messageID(again) != m.ID {
			t.Fatalf("forwarding the copy again changes the ID from %q to %q", m.ID, messageID(again))
		}

		// What a Publisher writes for the delivered message reads back as it.
		if addrErr != nil {
			return
		}
		pr := record(m)
		pr.Topic, pr.Partition, pr.Offset = "mb2", channel.HomePartition(string(pr.Key), partitions), offset+1
		if string(pr.Key) != string(key) {
			t.Fatalf("record key %q, want %q", pr.Key, key)
		}
		back := message(pr)
		if back.ID != m.ID || back.Address != m.Address || !maps.Equal(back.Headers, m.Headers) || !bytes.Equal(back.Payload, m.Payload) {
			t.Fatalf("published %+v, delivered %+v", m, back)
		}
	})
}
