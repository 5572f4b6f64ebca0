package entry

import (
	"reflect"
	"testing"
	"time"
)

func TestRoundTrip(t *testing.T) {
	at := time.Date(2026, 11, 26, 1, 2, 3, 456789, time.UTC)
	for _, a := range []Attempt{{N: 3, Error: "boom", At: at}, {N: 4, Error: "boom", At: at, RetryAt: at.Add(time.Second)}} {
		if got, err := DecodeAttempt(Encode(a)); err != nil || got != a {
			t.Errorf("attempt: %+v %v, want %+v", got, err, a)
		}
	}
	e := Effect{Index: 2, Name: "notify", Result: []byte(`42`)}
	if got, err := DecodeEffect(Encode(e)); err != nil || !reflect.DeepEqual(got, e) {
		t.Errorf("effect: %+v %v", got, err)
	}
	c := Complete{N: 1, At: at, Payload: []byte(`{"add":1}`), Headers: map[string]string{"a": "1", "b": ""}}
	if got, err := DecodeComplete(Encode(c)); err != nil || !reflect.DeepEqual(got, c) {
		t.Errorf("complete: %+v %v", got, err)
	}
	d := DeadLetter{N: 5, Reason: "attempts exhausted", Error: "x", At: at}
	if got, err := DecodeDeadLetter(Encode(d)); err != nil || got != d {
		t.Errorf("dead letter: %+v %v", got, err)
	}
}

func TestCorruptDataIsAnError(t *testing.T) {
	for _, data := range [][]byte{nil, {9}, {version}, {version, 200}, Encode(Complete{Payload: []byte("abc")})[:4]} {
		if _, err := DecodeComplete(data); err == nil {
			t.Errorf("DecodeComplete(%v) accepted corrupt data", data)
		}
	}
}

// Replay must hand a handler exactly what the live run did: an empty
// payload or header map is not nil.
func TestEmptyIsNotNil(t *testing.T) {
	for _, c := range []Complete{
		{N: 1},
		{N: 1, Payload: []byte{}},
		{N: 1, Headers: map[string]string{}},
		{N: 1, Payload: []byte{}, Headers: map[string]string{}},
		{N: 1, Payload: []byte("x"), Headers: map[string]string{"k": ""}},
	} {
		got, err := DecodeComplete(Encode(c))
		if err != nil || !reflect.DeepEqual(got, c) || (got.Payload == nil) != (c.Payload == nil) || (got.Headers == nil) != (c.Headers == nil) {
			t.Errorf("%#v came back as %#v (%v)", c, got, err)
		}
	}
	a := Attempt{N: 2, DeadLetter: "permanent error", Error: "bad"}
	if got, err := DecodeAttempt(Encode(a)); err != nil || got != a {
		t.Errorf("dead-letter decision: %+v %v", got, err)
	}
}

func TestHugeHeaderCountIsCorrupt(t *testing.T) {
	data := []byte{version, 1, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x0f}
	if _, err := DecodeComplete(data); err == nil {
		t.Error("a header count beyond the data was accepted")
	}
}
