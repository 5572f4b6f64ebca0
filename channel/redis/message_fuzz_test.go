package redis

import (
	"bytes"
	"fmt"
	"maps"
	"strings"
	"testing"

	"github.com/postbox-dev/postbox/channel"
	"github.com/postbox-dev/postbox/channel/internal/lease"
)

// FuzzDecodeEntry hands decodeEntry stream entries with arbitrary entry
// IDs and fields, as a script may return them. shape bit 0 replaces the
// second field's value with a number, bit 1 drops the last value (an odd
// field list), bit 2 passes a non-list entry. It never panics, and a
// decoded message is what the fields say: ID from "id" (or
// "mailbox/partition/entry ID" when missing or empty), address from
// "address" (the zero address and HeaderBadAddress when it does not
// parse), a non-nil payload from "payload", headers from the "h:" fields,
// the last of each field winning.
func FuzzDecodeEntry(f *testing.F) {
	f.Add("1700000000123-0", fieldID, "m1", fieldAddress, "counter/7", fieldPayload, `{"add":1}`, headerPrefix+"trace", "abc", uint8(0))
	f.Add("0-0", fieldAddress, "counter/7", "", "", "", "", "", "", uint8(0)) // no ID, no payload
	f.Add("1-2", fieldID, "", fieldAddress, "nokey", fieldPayload, "", headerPrefix, "", uint8(0))
	f.Add("1-2-3", fieldID, "m", fieldAddress, "a/b", "", "", "", "", uint8(0))
	f.Add("18446744073709551615-18446744073709551615", fieldAddress, "a/b", fieldAddress, "c/d", fieldID, "x", fieldID, "", uint8(0))
	f.Add("5-1", fieldID, "m\x00", fieldAddress, "\xff/\x00", fieldPayload, "\x00\xff", headerPrefix+"\xc3\x28", "\xfe", uint8(1))
	f.Add("5-1", fieldID, "m", fieldAddress, "a/b", fieldPayload, "p", headerPrefix+"k", "v", uint8(2))
	f.Add("5-1", "", "", "", "", "", "", "", "", uint8(4))

	f.Fuzz(func(t *testing.T, entryID, f1, v1, f2, v2, f3, v3, f4, v4 string, shape uint8) {
		fields := []any{f1, v1, f2, v2, f3, v3, f4, v4}
		if shape&1 != 0 {
			fields[3] = int64(len(v2))
		}
		if shape&2 != 0 {
			fields = fields[:len(fields)-1]
		}
		var raw any = []any{entryID, fields}
		if shape&4 != 0 {
			raw = entryID
		}
		const mailbox, partition = "mb", int32(3)
		msg, id, err := decodeEntry(raw, mailbox, partition)
		if shape&4 != 0 {
			if err == nil {
				t.Fatalf("entry %q that is not a list decoded as %+v", entryID, msg)
			}
			return
		}
		ms, seq, idErr := parseEntryID(entryID)
		if idErr != nil {
			if err == nil {
				t.Fatalf("entry ID %q is not ms-seq but decoded as %+v", entryID, msg)
			}
			return
		}

		// What the fields say, the last of each winning.
		var wantID, addr string
		var payload []byte
		var headers map[string]string
		for i := 0; i+1 < len(fields); i += 2 {
			k, _ := fields[i].(string)
			v, _ := fields[i+1].(string)
			switch {
			case k == fieldID:
				wantID = v
			case k == fieldAddress:
				addr = v
			case k == fieldPayload:
				payload = []byte(v)
			case strings.HasPrefix(k, headerPrefix):
				if headers == nil {
					headers = map[string]string{}
				}
				headers[strings.TrimPrefix(k, headerPrefix)] = v
			}
		}
		if wantID == "" {
			wantID = fmt.Sprintf("%s/%d/%s", mailbox, partition, entryID)
		}
		if id != entryID || msg.ID != wantID {
			t.Fatalf("entry ID %q, message ID %q; want %q and %q", id, msg.ID, entryID, wantID)
		}
		if err != nil {
			t.Fatalf("entry %q with fields %q: %v", entryID, fields, err)
		}
		// An address that does not parse is delivered as the zero address,
		// with the field in HeaderBadAddress, for the host to dead-letter.
		wantAddr, addrErr := channel.ParseAddress(addr)
		if addrErr != nil {
			if headers == nil {
				headers = map[string]string{}
			}
			headers[HeaderBadAddress] = addr
		}
		if msg.Address != wantAddr || msg.Payload == nil || !bytes.Equal(msg.Payload, payload) ||
			!maps.Equal(msg.Headers, headers) || (msg.Headers == nil) != (headers == nil) {
			t.Fatalf("fields %q decoded as %+v", fields, msg)
		}
		if msg.Mailbox != mailbox || msg.Partition != partition ||
			msg.Offset != offsetOf(ms, seq) || msg.PublishedAt.UnixMilli() != int64(ms) {
			t.Fatalf("entry %q decoded with position %+v", entryID, msg)
		}
	})
}

// FuzzEntryRoundTrip encodes a message as the Publisher writes it
// (lease.Records, entryValues), turns its values into the strings Redis
// hands back and decodes it (decodeEntry): Records accepts only addresses
// that print as a "type/id" that parses back to them, and what it accepts
// comes back as it went in, up to a nil payload (delivered as empty) and
// an empty header map (delivered as nil). headers holds "key=value" lines.
func FuzzEntryRoundTrip(f *testing.F) {
	f.Add("counter", "7", "m1", []byte(`{"add":1}`), "trace=abc\nspan=", uint8(8))
	f.Add("counter", "a/b", "", []byte{}, "", uint8(1))
	f.Add("a/b", "c", "m", []byte("p"), "", uint8(0))
	f.Add("", "x", "m", []byte("p"), "", uint8(0))
	f.Add("t", "", "m", []byte("p"), "=", uint8(0))
	f.Add("\xff\x00", "\x00\xfe", "m\x00", []byte("\x00\xff"), "\x00=\xff\n\xc3\x28=", uint8(200))

	f.Fuzz(func(t *testing.T, typ, aid, id string, payload []byte, headers string, parts uint8) {
		msg := channel.Message{ID: id, Address: channel.Address{Type: typ, ID: aid}, Payload: payload}
		for line := range strings.SplitSeq(headers, "\n") {
			if k, v, ok := strings.Cut(line, "="); ok {
				if msg.Headers == nil {
					msg.Headers = map[string]string{}
				}
				msg.Headers[k] = v
			}
		}
		partitions := int(parts)%64 + 1
		recs, err := lease.Records(Backend, partitions, []channel.Message{msg})
		// It may refuse more (limits on identifiers), never less.
		if err != nil {
			return
		}
		if parsed, perr := channel.ParseAddress(msg.Address.String()); perr != nil || parsed != msg.Address {
			t.Fatalf("Records accepted address %+v, which prints as %q: %+v, %v", msg.Address, msg.Address.String(), parsed, perr)
		}
		r := recs[0]
		if r.Partition != channel.HomePartition(msg.Address.String(), partitions) {
			t.Fatalf("entry on partition %d, home %d", r.Partition, channel.HomePartition(msg.Address.String(), partitions))
		}
		values := entryValues(r)
		fields := make([]any, len(values))
		for i, v := range values {
			switch v := v.(type) {
			case string:
				fields[i] = v
			case []byte:
				fields[i] = string(v)
			default:
				t.Fatalf("field %d is a %T", i, v)
			}
		}
		got, entryID, err := decodeEntry([]any{"1700000000123-7", fields}, "mb", r.Partition)
		if err != nil || entryID != "1700000000123-7" {
			t.Fatalf("decode %q: entry %q, %v", fields, entryID, err)
		}
		want := msg
		if want.ID == "" {
			want.ID = got.ID // a new random one
			if len(got.ID) != 32 {
				t.Fatalf("assigned ID %q, want 32 hex digits", got.ID)
			}
		}
		if want.Payload == nil {
			want.Payload = []byte{}
		}
		if len(want.Headers) == 0 {
			want.Headers = nil
		}
		if got.ID != want.ID || got.Address != want.Address || !bytes.Equal(got.Payload, want.Payload) ||
			got.Payload == nil || !maps.Equal(got.Headers, want.Headers) || (got.Headers == nil) != (want.Headers == nil) {
			t.Fatalf("published %+v, delivered %+v", msg, got)
		}
	})
}
