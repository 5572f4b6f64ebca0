// Package entry encodes the Data of each journal entry kind the actor host
// writes. The encoding is a compact binary one (replay decodes every entry
// of an actor's tail, so it must be cheap); ViewEntry in actorhost renders
// it for people. It is internal so that tools and benchmarks in this module
// can write histories exactly as the host does.
package entry

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sort"
	"time"
)

// version leads every encoded entry, so the format can change later.
const version = 1

// Attempt is the data of a journal.KindAttempt entry.
type Attempt struct {
	N     int
	Error string // empty: the attempt started
	At    time.Time
	// DeadLetter, when set, records the decision to dead-letter the message
	// (the reason), journaled before the envelope is stored: a redelivery
	// then finishes the dead letter instead of running the handler again.
	DeadLetter string
	// RetryAt is, for a failed attempt, when the next may start: the end
	// of the backoff the host chose. A host that stops during the backoff
	// gives the message up unacked, and its next owner waits out the rest.
	RetryAt time.Time
}

// Effect is the data of a journal.KindEffect entry.
type Effect struct {
	Index  int
	Name   string
	Result []byte
}

// Complete is the data of a journal.KindComplete entry: what replay needs to
// run the handler again.
type Complete struct {
	N       int
	At      time.Time
	Payload []byte
	Headers map[string]string
}

// DeadLetter is the data of a journal.KindDeadLetter entry.
type DeadLetter struct {
	N      int
	Reason string
	Error  string
	At     time.Time
}

// ErrCorrupt is returned for data that does not decode.
var ErrCorrupt = errors.New("entry: corrupt or unknown entry data")

type writer struct{ b []byte }

func (w *writer) uint(v uint64)   { w.b = binary.AppendUvarint(w.b, v) }
func (w *writer) int(v int64)     { w.b = binary.AppendVarint(w.b, v) }
func (w *writer) bytes(v []byte)  { w.uint(uint64(len(v))); w.b = append(w.b, v...) }
func (w *writer) string(v string) { w.uint(uint64(len(v))); w.b = append(w.b, v...) }
func (w *writer) time(t time.Time) {
	if t.IsZero() {
		w.int(0)
		return
	}
	w.int(t.UnixNano())
}

type reader struct {
	b   []byte
	err error
}

// uint and int read a varint. On a short or overlong one, binary's
// decoders return 0 and n <= 0.
func (r *reader) uint() uint64 {
	v, n := binary.Uvarint(r.b)
	r.skip(n)
	return v
}

func (r *reader) int() int64 {
	v, n := binary.Varint(r.b)
	r.skip(n)
	return v
}

// skip consumes the n bytes a varint took; n <= 0 marks the data corrupt.
func (r *reader) skip(n int) {
	if n <= 0 {
		r.err = ErrCorrupt
		return
	}
	r.b = r.b[n:]
}

func (r *reader) bytes() []byte {
	n := r.uint()
	if r.err != nil || n > uint64(len(r.b)) {
		r.err = ErrCorrupt
		return nil
	}
	v := r.b[:n:n]
	r.b = r.b[n:]
	if n == 0 {
		return nil
	}
	return v
}

func (r *reader) string() string { return string(r.bytes()) }

func (r *reader) time() time.Time {
	n := r.int()
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}

func start(data []byte) *reader {
	if len(data) == 0 || data[0] != version {
		return &reader{err: ErrCorrupt}
	}
	return &reader{b: data[1:]}
}

// more reports whether optional trailing fields follow.
func (r *reader) more() bool { return r.err == nil && len(r.b) > 0 }

func (r *reader) done(what string) error {
	if r.err != nil {
		return fmt.Errorf("%w (%s)", r.err, what)
	}
	return nil
}

// Encode encodes an Attempt, Effect, Complete or DeadLetter.
func Encode(v any) []byte {
	w := &writer{b: make([]byte, 1, 64)}
	w.b[0] = version
	switch d := v.(type) {
	case Attempt:
		w.uint(uint64(d.N))
		w.time(d.At)
		w.string(d.Error)
		// Optional, in this order: older entries end before them.
		if d.DeadLetter != "" || !d.RetryAt.IsZero() {
			w.string(d.DeadLetter)
		}
		if !d.RetryAt.IsZero() {
			w.time(d.RetryAt)
		}
	case Effect:
		w.uint(uint64(d.Index))
		w.string(d.Name)
		w.bytes(d.Result)
	case Complete:
		w.uint(uint64(d.N))
		w.time(d.At)
		w.bytes(d.Payload)
		keys := make([]string, 0, len(d.Headers))
		for k := range d.Headers {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		w.uint(uint64(len(keys)))
		for _, k := range keys {
			w.string(k)
			w.string(d.Headers[k])
		}
		// Optional: whether an empty payload or header map was non-nil, so
		// replay hands the handler exactly what the live run saw.
		var flags uint64
		if d.Payload != nil && len(d.Payload) == 0 {
			flags |= emptyPayload
		}
		if d.Headers != nil && len(d.Headers) == 0 {
			flags |= emptyHeaders
		}
		if flags != 0 {
			w.uint(flags)
		}
	case DeadLetter:
		w.uint(uint64(d.N))
		w.time(d.At)
		w.string(d.Reason)
		w.string(d.Error)
	default:
		panic(fmt.Sprintf("entry: cannot encode %T", v))
	}
	return w.b
}

// Flags of a Complete's optional trailing field.
const (
	emptyPayload = 1 << iota
	emptyHeaders
)

// DecodeAttempt decodes an Attempt.
func DecodeAttempt(data []byte) (Attempt, error) {
	r := start(data)
	d := Attempt{N: int(r.uint()), At: r.time(), Error: r.string()}
	if r.more() {
		d.DeadLetter = r.string()
	}
	if r.more() {
		d.RetryAt = r.time()
	}
	return d, r.done("attempt")
}

// DecodeEffect decodes an Effect.
func DecodeEffect(data []byte) (Effect, error) {
	r := start(data)
	d := Effect{Index: int(r.uint()), Name: r.string(), Result: r.bytes()}
	return d, r.done("effect")
}

// DecodeComplete decodes a Complete.
func DecodeComplete(data []byte) (Complete, error) {
	r := start(data)
	d := Complete{N: int(r.uint()), At: r.time(), Payload: r.bytes()}
	if n := r.uint(); n > 0 && r.err == nil {
		// Each header takes at least two bytes: a corrupt count must not
		// size the map.
		if n > uint64(len(r.b))/2 {
			r.err = ErrCorrupt
		} else {
			d.Headers = make(map[string]string, n)
			for range n {
				k := r.string()
				d.Headers[k] = r.string()
			}
		}
	}
	if r.more() {
		flags := r.uint()
		if flags&emptyPayload != 0 && d.Payload == nil {
			d.Payload = []byte{}
		}
		if flags&emptyHeaders != 0 && d.Headers == nil {
			d.Headers = map[string]string{}
		}
	}
	return d, r.done("complete")
}

// DecodeDeadLetter decodes a DeadLetter.
func DecodeDeadLetter(data []byte) (DeadLetter, error) {
	r := start(data)
	d := DeadLetter{N: int(r.uint()), At: r.time(), Reason: r.string(), Error: r.string()}
	return d, r.done("dead-letter")
}
