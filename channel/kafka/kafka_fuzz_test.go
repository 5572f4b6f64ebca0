package kafka

import (
	"bytes"
	"fmt"
	"maps"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/postbox-dev/postbox/channel"
)

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
