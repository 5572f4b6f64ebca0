package dlq

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/postbox-dev/postbox/channel"
)

func TestRedriveIDCountsUp(t *testing.T) {
	for in, want := range map[string]string{
		"m1":       "m1.r1",
		"m1.r1":    "m1.r2",
		"m1.r9":    "m1.r10",
		"a.rb":     "a.rb.r1",
		"x/3/17.r": "x/3/17.r.r1",
	} {
		if got := RedriveID(in); got != want {
			t.Errorf("RedriveID(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestRedriveMessage(t *testing.T) {
	env := Envelope{ID: "dl-1", MessageID: "m1", Address: "zähler/ä b/c", Payload: []byte("\xff\x00"),
		Headers: map[string]string{"k\xff": "v\x00"}}
	m, err := RedriveMessage(env)
	if err != nil {
		t.Fatal(err)
	}
	want := channel.Message{ID: "m1.r1", Address: channel.Address{Type: "zähler", ID: "ä b/c"}, Payload: env.Payload,
		Headers: map[string]string{"k\xff": "v\x00", HeaderRedriveOf: "m1"}}
	if !reflect.DeepEqual(m, want) {
		t.Errorf("RedriveMessage = %#v, want %#v", m, want)
	}
	if _, ok := env.Headers[HeaderRedriveOf]; ok {
		t.Errorf("RedriveMessage changed the envelope's headers")
	}

	for _, tc := range []struct {
		msgID, addr string
		want        error
	}{
		{"m1", "nokey", channel.ErrBadAddress},
		{"m1", "counter/\xff", channel.ErrBadAddress},
		{"m1", "counter/a\x00b", channel.ErrBadAddress},
		{"m1", "counter/" + strings.Repeat("x", channel.MaxIdentifierLen), channel.ErrBadAddress},
		{"m\xff", "counter/1", channel.ErrBadMessageID},
		{strings.Repeat("m", channel.MaxIdentifierLen-1), "counter/1", channel.ErrBadMessageID}, // its copy is too long
	} {
		_, err := RedriveMessage(Envelope{ID: "dl-bad", MessageID: tc.msgID, Address: tc.addr})
		if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), "dl-bad") || !strings.Contains(err.Error(), "purge") {
			t.Errorf("RedriveMessage(%+q to %+q) = %v; want an error matching %v that names dl-bad and says to purge it",
				tc.msgID, tc.addr, err, tc.want)
		}
	}
}
