package redis

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/postbox-dev/postbox/channel"
	"github.com/postbox-dev/postbox/channel/internal/lease"
	"github.com/redis/go-redis/v9"
)

// Stream entries carry a message in these fields, in this order; each
// header <name> follows as a field "h:<name>". Field names and values are
// Redis strings, so IDs, payloads and headers are binary safe, and an entry
// reads well in redis-cli.
const (
	fieldID      = "id"
	fieldAddress = "address"
	fieldPayload = "payload"
	headerPrefix = "h:"
)

// HeaderBadAddress carries the address field of a delivered entry that is
// not a "type/id" address ("" when the entry has none), as channel/kafka
// does for a record key; such a message has the zero Address, and the host
// dead-letters it. It replaces an entry's own header of that name.
const HeaderBadAddress = "postbox-bad-address"

// seqBits is how many low bits of an Offset hold the entry ID's sequence
// number; the millisecond time takes the bits above.
const seqBits = 20

// xadd appends recs to their partition streams.
func (m *Mailbox) xadd(ctx context.Context, p redis.Pipeliner, recs []lease.Record) {
	for _, r := range recs {
		p.XAdd(ctx, &redis.XAddArgs{Stream: m.streamKey(r.Partition), ID: "*", Values: entryValues(r)})
	}
}

// entryValues are the fields and values of r's stream entry.
func entryValues(r lease.Record) []any {
	values := make([]any, 0, 6+2*len(r.Headers))
	values = append(values, fieldID, r.ID, fieldAddress, r.Address, fieldPayload, r.Payload)
	for k, v := range r.Headers {
		values = append(values, headerPrefix+k, v)
	}
	return values
}

// parseEntryID splits a stream entry ID "ms-seq".
func parseEntryID(id string) (ms, seq uint64, err error) {
	a, b, ok := strings.Cut(id, "-")
	if ok {
		if ms, err = strconv.ParseUint(a, 10, 64); err == nil {
			seq, err = strconv.ParseUint(b, 10, 64)
		}
	}
	if !ok || err != nil {
		return 0, 0, fmt.Errorf("stream entry ID %q is not ms-seq", id)
	}
	return ms, seq, nil
}

// offsetOf maps a stream entry ID to an Offset: its millisecond time
// shifted left by 20 bits, or'ed with its sequence number. Offsets grow
// with entry IDs as long as fewer than 2^20 entries of a partition share one
// millisecond; a larger sequence number is clamped.
func offsetOf(ms, seq uint64) int64 {
	return int64(ms<<seqBits | min(seq, 1<<seqBits-1))
}

// decodeEntry builds a delivered message from a stream entry as a script
// returns it: {id, {field, value, …}}. Any entry is delivered, whatever its
// fields (see HeaderBadAddress), rather than stay pending forever; it fails
// only on a reply that is not a stream entry.
func decodeEntry(raw any, mailbox string, partition int32) (channel.Message, string, error) {
	e, ok := raw.([]any)
	if !ok || len(e) < 2 {
		return channel.Message{}, "", fmt.Errorf("unexpected stream entry %T", raw)
	}
	id, _ := e[0].(string)
	fields, _ := e[1].([]any)
	ms, seq, err := parseEntryID(id)
	if err != nil {
		return channel.Message{}, "", err
	}
	msg := channel.Message{
		Mailbox:     mailbox,
		Partition:   partition,
		Offset:      offsetOf(ms, seq),
		PublishedAt: time.UnixMilli(int64(ms)),
	}
	var addr string
	for i := 0; i+1 < len(fields); i += 2 {
		k, _ := fields[i].(string)
		v, _ := fields[i+1].(string)
		switch {
		case k == fieldID:
			msg.ID = v
		case k == fieldAddress:
			addr = v
		case k == fieldPayload:
			msg.Payload = []byte(v)
		case strings.HasPrefix(k, headerPrefix):
			if msg.Headers == nil {
				msg.Headers = make(map[string]string)
			}
			msg.Headers[k[len(headerPrefix):]] = v
		}
	}
	if msg.ID == "" {
		// Written by something other than Mailbox.Publisher: the entry ID is
		// stable and unique within the mailbox.
		msg.ID = fmt.Sprintf("%s/%d/%s", mailbox, partition, id)
	}
	if a, err := channel.ParseAddress(addr); err == nil {
		msg.Address = a
	} else {
		if msg.Headers == nil {
			msg.Headers = make(map[string]string, 1)
		}
		msg.Headers[HeaderBadAddress] = addr
	}
	if msg.Payload == nil {
		msg.Payload = []byte{}
	}
	return msg, id, nil
}
