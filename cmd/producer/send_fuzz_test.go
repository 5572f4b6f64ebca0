package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"testing"

	"github.com/postbox-dev/postbox/channel"
)

// recordingPublisher keeps copies of what it is asked to publish.
type recordingPublisher struct{ msgs []channel.Message }

func (p *recordingPublisher) Publish(_ context.Context, msgs ...channel.Message) error {
	p.msgs = append(p.msgs, msgs...)
	return nil
}

func (p *recordingPublisher) Close() error { return nil }

// FuzzSendLines feeds arbitrary input to `producer send`'s NDJSON reader
// (sendLines). It never panics; every message it publishes has an address
// that ParseAddress accepts and prints back as it, and a payload that is
// JSON; a run that succeeds reports how many it published.
func FuzzSendLines(f *testing.F) {
	for _, s := range []string{
		`{"actor":"counter/1","data":{"add":1}}` + "\n" + `{"actor":"counter/2","id":"m2","data":[1,2]}`,
		"\n  \n\t" + `{"actor":"counter/1","data":1}` + "\r\n",
		`{"actor":"counter/1"}`,
		`{"actor":"nokey","data":1}`,
		`{"actor":"counter/1","data":null}`,
		`{"ACTOR":"a/b","Data":"x","actor":"c/d"}`,
		`[1,2]`,
		`null`,
		`{"actor":"counter/1","data":{"add":1}} trailing`,
		"{\"actor\":\"\xff/\x00\",\"data\":\"\xfe\"}",
		"{\"actor\":\"a/\\u0000\",\"data\":\"\\ud800\"}\x00",
	} {
		f.Add([]byte(s))
	}

	f.Fuzz(func(t *testing.T, in []byte) {
		p := &recordingPublisher{}
		var out bytes.Buffer
		err := sendLines(context.Background(), p, bytes.NewReader(in), &out)
		for i, m := range p.msgs {
			a, perr := channel.ParseAddress(m.Address.String())
			if perr != nil || a != m.Address {
				t.Fatalf("message %d: address %+v prints as %q, which parses as %+v, %v", i, m.Address, m.Address.String(), a, perr)
			}
			if len(m.Payload) == 0 || !json.Valid(m.Payload) {
				t.Fatalf("message %d: payload %q is not JSON", i, m.Payload)
			}
		}
		if err != nil {
			return
		}
		if want := fmt.Sprintf("published %d\n", len(p.msgs)); out.String() != want {
			t.Fatalf("output %q, want %q", out.String(), want)
		}
	})
}
