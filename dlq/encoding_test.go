package dlq

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"
)

// odd is an envelope whose every string holds bytes JSON cannot keep.
func odd() Envelope {
	at := time.Date(2025, 1, 2, 3, 4, 5, 123456789, time.UTC)
	return Envelope{
		ID:        "dl-\xff",
		MessageID: "m\xff\xfe\x00\x80",
		Address:   "counter/\xc3\x28\x00",
		Payload:   []byte("p\x00\xff"),
		Headers:   map[string]string{"k\xff": "v\xfe\x00", "": "", "\x80": "\xbf"},
		Source: Source{Backend: "b\xff", Mailbox: "mb\x00", Partition: -3, Offset: 1 << 40,
			Published: at.In(time.FixedZone("", 5*3600+30*60))},
		Attempts: 7,
		Errors: []AttemptError{
			{Attempt: 1, Error: "boom \xff", At: at},
			{Attempt: 1, Error: "", At: time.Time{}},
		},
		Reason:         "r\xed\xa0\x80", // an encoded surrogate: invalid UTF-8
		Worker:         "w\x00\xc0\xaf", // an overlong encoding
		DeadLetteredAt: at,
	}
}

func roundTrip(t *testing.T, env Envelope) Envelope {
	t.Helper()
	b, err := env.MarshalBinary()
	if err != nil {
		t.Fatalf("MarshalBinary: %v", err)
	}
	var got Envelope
	if err := got.UnmarshalBinary(b); err != nil {
		t.Fatalf("UnmarshalBinary: %v", err)
	}
	return got
}

func TestBinaryKeepsEveryByte(t *testing.T) {
	want := odd()
	got := roundTrip(t, want)
	// Times keep their instant and offset; compare them apart.
	if !got.Source.Published.Equal(want.Source.Published) || got.Source.Published.Format(time.RFC3339) != want.Source.Published.Format(time.RFC3339) {
		t.Errorf("Published %v, want %v", got.Source.Published, want.Source.Published)
	}
	got.Source.Published = want.Source.Published
	if !reflect.DeepEqual(got, want) {
		t.Errorf("round trip =\n%#v\nwant\n%#v", got, want)
	}

	// Nil and empty stay apart.
	bare := Envelope{MessageID: "m", Payload: []byte{}, Headers: map[string]string{}, Errors: []AttemptError{}}
	if got := roundTrip(t, bare); got.Payload == nil || got.Headers == nil || got.Errors == nil {
		t.Errorf("empty fields came back nil: %+v", got)
	}
	if got := roundTrip(t, Envelope{MessageID: "m"}); got.Payload != nil || got.Headers != nil || got.Errors != nil {
		t.Errorf("nil fields came back non-nil: %+v", got)
	}
}

// What the SQLite and Redis stores wrote before: encoding/json of Envelope.
func TestUnmarshalBinaryReadsOldJSON(t *testing.T) {
	want := odd()
	for _, s := range []*string{&want.ID, &want.MessageID, &want.Address, &want.Reason, &want.Worker} {
		*s = strings.ToValidUTF8(*s, "?") // what JSON can keep
	}
	want.Headers = map[string]string{"trace": "abc"}
	want.Errors[0].Error = "boom"
	want.Source.Backend, want.Source.Mailbox = "sqlite", "/tmp/mb.db"
	doc, err := json.Marshal(want)
	if err != nil {
		t.Fatal(err)
	}
	var got Envelope
	if err := got.UnmarshalBinary(doc); err != nil {
		t.Fatalf("UnmarshalBinary of JSON: %v", err)
	}
	if got.MessageID != want.MessageID || got.Address != want.Address || string(got.Payload) != string(want.Payload) ||
		!reflect.DeepEqual(got.Headers, want.Headers) || got.Attempts != want.Attempts || len(got.Errors) != 2 ||
		!got.DeadLetteredAt.Equal(want.DeadLetteredAt) {
		t.Errorf("JSON envelope read as %+v, want %+v", got, want)
	}
}

func TestUnmarshalBinaryRefusesDamage(t *testing.T) {
	b, err := odd().MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	newer := append([]byte{}, b...)
	newer[len(encodingMagic)-1]++
	for name, data := range map[string][]byte{
		"empty":     nil,
		"garbage":   []byte("hello"),
		"truncated": b[:len(b)-3],
		"extended":  append(append([]byte{}, b...), 0),
		"newer":     newer,
	} {
		var env Envelope
		if err := env.UnmarshalBinary(data); err == nil {
			t.Errorf("%s: UnmarshalBinary accepted it: %+v", name, env)
		}
	}
}

func FuzzBinaryRoundTrip(f *testing.F) {
	f.Add("m\xff", "a/\x00", []byte("\xfe"), "k\x80", "v\xc0", "e\xed", int64(3))
	f.Fuzz(func(t *testing.T, msgID, addr string, payload []byte, hk, hv, errText string, offset int64) {
		at := time.Unix(0, offset).UTC()
		want := Envelope{MessageID: msgID, Address: addr, Payload: payload, Headers: map[string]string{hk: hv},
			Source:   Source{Offset: offset, Published: at},
			Attempts: int(offset % 100), Errors: []AttemptError{{Attempt: 1, Error: errText, At: at}},
			Reason: errText, Worker: hv, DeadLetteredAt: at}
		got := roundTrip(t, want)
		if !reflect.DeepEqual(got, want) {
			t.Errorf("round trip =\n%#v\nwant\n%#v", got, want)
		}
		// Decoding arbitrary bytes fails or succeeds, never panics.
		var env Envelope
		_ = env.UnmarshalBinary(append([]byte(encodingMagic), payload...))
	})
}
