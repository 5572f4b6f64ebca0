package dlq

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"
)

// encodingMagic starts every envelope MarshalBinary writes; its last byte
// is the version of the layout. A JSON document never starts with it, so
// UnmarshalBinary tells the two apart.
const encodingMagic = "\x00pbdl\x01"

// MarshalBinary encodes e byte-exactly: every string and byte slice is
// kept as it is, invalid UTF-8 and NUL bytes included, where JSON would
// replace invalid UTF-8 with U+FFFD. Stores that keep an envelope as one
// value use it. Times keep their instant and zone offset, not their
// monotonic reading. Nil and empty Payload, Headers and Errors stay
// distinct.
func (e Envelope) MarshalBinary() ([]byte, error) {
	b := make([]byte, 0, 256+len(e.Payload))
	b = append(b, encodingMagic...)
	b = appendString(b, e.ID)
	b = appendString(b, e.MessageID)
	b = appendString(b, e.Address)
	b = appendNullable(b, e.Payload == nil, len(e.Payload))
	b = append(b, e.Payload...)
	b = appendNullable(b, e.Headers == nil, len(e.Headers))
	for _, k := range slices.Sorted(maps.Keys(e.Headers)) { // sorted: one envelope, one encoding
		b = appendString(b, k)
		b = appendString(b, e.Headers[k])
	}
	b = appendString(b, e.Source.Backend)
	b = appendString(b, e.Source.Mailbox)
	b = binary.AppendVarint(b, int64(e.Source.Partition))
	b = binary.AppendVarint(b, e.Source.Offset)
	b, err := appendTime(b, e.Source.Published)
	if err != nil {
		return nil, fmt.Errorf("dlq: encode dead letter of message %q: source published time: %w", e.MessageID, err)
	}
	b = binary.AppendVarint(b, int64(e.Attempts))
	b = appendNullable(b, e.Errors == nil, len(e.Errors))
	for i, ae := range e.Errors {
		b = binary.AppendVarint(b, int64(ae.Attempt))
		b = appendString(b, ae.Error)
		if b, err = appendTime(b, ae.At); err != nil {
			return nil, fmt.Errorf("dlq: encode dead letter of message %q: time of error %d: %w", e.MessageID, i+1, err)
		}
	}
	b = appendString(b, e.Reason)
	b = appendString(b, e.Worker)
	if b, err = appendTime(b, e.DeadLetteredAt); err != nil {
		return nil, fmt.Errorf("dlq: encode dead letter of message %q: dead-lettered time: %w", e.MessageID, err)
	}
	return b, nil
}

// UnmarshalBinary decodes an envelope MarshalBinary wrote. It also reads
// the JSON object (encoding/json of Envelope) that the SQLite and Redis
// stores wrote before they used MarshalBinary, so their old dead letters
// stay readable; those keep whatever JSON already replaced.
func (e *Envelope) UnmarshalBinary(data []byte) error {
	if len(data) > 0 && data[0] == '{' {
		var env Envelope
		if err := json.Unmarshal(data, &env); err != nil {
			return fmt.Errorf("dlq: decode dead letter (JSON): %w", err)
		}
		*e = env
		return nil
	}
	if len(data) < len(encodingMagic) || string(data[:len(encodingMagic)-1]) != encodingMagic[:len(encodingMagic)-1] {
		return errors.New("dlq: decode dead letter: not an envelope (neither the binary layout nor JSON)")
	}
	if v := data[len(encodingMagic)-1]; v != encodingMagic[len(encodingMagic)-1] {
		return fmt.Errorf("dlq: decode dead letter: layout version %d is newer than this postbox reads: upgrade it", v)
	}
	r := reader{b: data[len(encodingMagic):]}
	var env Envelope
	env.ID = r.string()
	env.MessageID = r.string()
	env.Address = r.string()
	if n, ok := r.nullable(); ok {
		env.Payload = r.bytes(n)
	}
	if n, ok := r.nullable(); ok {
		env.Headers = make(map[string]string, min(n, len(r.b)/2)) // each header takes two bytes at least
		for range n {
			if r.err != nil {
				break
			}
			k := r.string()
			env.Headers[k] = r.string()
		}
	}
	env.Source.Backend = r.string()
	env.Source.Mailbox = r.string()
	env.Source.Partition = int32(r.varint())
	env.Source.Offset = r.varint()
	env.Source.Published = r.time()
	env.Attempts = int(r.varint())
	if n, ok := r.nullable(); ok {
		env.Errors = make([]AttemptError, 0, min(n, len(r.b)/3)) // each error takes three bytes at least
		for range n {
			if r.err != nil {
				break
			}
			var ae AttemptError
			ae.Attempt = int(r.varint())
			ae.Error = r.string()
			ae.At = r.time()
			env.Errors = append(env.Errors, ae)
		}
	}
	env.Reason = r.string()
	env.Worker = r.string()
	env.DeadLetteredAt = r.time()
	if r.err == nil && len(r.b) > 0 {
		r.err = fmt.Errorf("%d bytes left over", len(r.b))
	}
	if r.err != nil {
		return fmt.Errorf("dlq: decode dead letter: %w (the stored envelope is damaged)", r.err)
	}
	*e = env
	return nil
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// appendNullable writes 0 for nil, else n+1.
func appendNullable(b []byte, isNil bool, n int) []byte {
	if isNil {
		return append(b, 0)
	}
	return binary.AppendUvarint(b, uint64(n)+1)
}

func appendTime(b []byte, t time.Time) ([]byte, error) {
	tb, err := t.MarshalBinary()
	if err != nil {
		return nil, err
	}
	b = binary.AppendUvarint(b, uint64(len(tb)))
	return append(b, tb...), nil
}

// reader reads what MarshalBinary wrote. After the first error every read
// returns a zero value and err keeps that error.
type reader struct {
	b   []byte
	err error
}

func (r *reader) fail(what string) {
	if r.err == nil {
		r.err = fmt.Errorf("truncated or malformed %s", what)
	}
	r.b = nil
}

func (r *reader) uvarint(what string) uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.fail(what)
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) varint() int64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Varint(r.b)
	if n <= 0 {
		r.fail("number")
		return 0
	}
	r.b = r.b[n:]
	return v
}

// take returns the next n bytes, or nil after an error.
func (r *reader) take(n uint64, what string) []byte {
	if r.err != nil {
		return nil
	}
	if n > uint64(len(r.b)) {
		r.fail(what)
		return nil
	}
	out := r.b[:n:n]
	r.b = r.b[n:]
	return out
}

func (r *reader) string() string { return string(r.take(r.uvarint("length"), "string")) }

// bytes returns a copy of the next n bytes, never nil.
func (r *reader) bytes(n int) []byte {
	return append([]byte{}, r.take(uint64(n), "payload")...)
}

// nullable reads what appendNullable wrote: ok is false for nil.
func (r *reader) nullable() (n int, ok bool) {
	v := r.uvarint("length")
	if v == 0 || r.err != nil {
		return 0, false
	}
	if v-1 > uint64(len(r.b)) { // every element takes a byte at least
		r.fail("length")
		return 0, false
	}
	return int(v - 1), true
}

func (r *reader) time() time.Time {
	tb := r.take(r.uvarint("length"), "time")
	var t time.Time
	if r.err == nil {
		if err := t.UnmarshalBinary(tb); err != nil {
			r.err = fmt.Errorf("time: %w", err)
			r.b = nil
		}
	}
	return t
}
