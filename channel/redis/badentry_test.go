package redis_test

import (
	"fmt"
	"maps"
	"strings"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/postbox-dev/postbox/channel"
	"github.com/postbox-dev/postbox/channel/redis"
)

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
	c := rawClient(t)
	stream := "{postbox:" + name + "}:s:0"
	entryIDs := make([]string, len(cases))
	for i, tc := range cases {
		id, err := c.XAdd(t.Context(), &goredis.XAddArgs{Stream: stream, Values: tc.fields}).Result()
		if err != nil {
			t.Fatal(err)
		}
		entryIDs[i] = id
	}

	r := record(t, open(t, name, redis.Options{}).Consumer(testConsumerOptions), true)
	deadline := time.Now().Add(10 * time.Second)
	for len(r.received()) < len(cases) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	got := r.received()
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
