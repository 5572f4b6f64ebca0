package entry

import (
	"reflect"
	"testing"
	"time"
)

func TestRoundTrip(t *testing.T) {
	at := time.Date(2026, 11, 26, 1, 2, 3, 456789, time.UTC)
	a := Attempt{N: 3, Error: "boom", At: at}
	if got, err := DecodeAttempt(Encode(a)); err != nil || got != a {
		t.Errorf("attempt: %+v %v", got, err)
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
