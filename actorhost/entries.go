package actorhost

import (
	"encoding/json"

	"github.com/postbox-dev/postbox/internal/entry"
	"github.com/postbox-dev/postbox/journal"
)

type (
	attemptData    = entry.Attempt
	effectData     = entry.Effect
	completeData   = entry.Complete
	deadLetterData = entry.DeadLetter
)

func mustJSON(v any) []byte { return entry.Encode(v) }

// EntryView is a journal entry decoded for people: `worker journal` prints it.
type EntryView struct {
	Seq     int64          `json:"seq"`
	Kind    string         `json:"kind"`
	Message string         `json:"message"`
	Data    map[string]any `json:"data,omitempty"`
}

// ViewEntry decodes e for display. Payloads and results that are JSON stay
// JSON.
func ViewEntry(e journal.Entry) EntryView {
	v := EntryView{Seq: e.Seq, Kind: e.Kind.String(), Message: e.MsgID}
	if len(e.Data) == 0 {
		return v
	}
	var err error
	switch e.Kind {
	case journal.KindAttempt:
		var d entry.Attempt
		if d, err = entry.DecodeAttempt(e.Data); err == nil {
			v.Data = map[string]any{"attempt": d.N, "at": d.At}
			if d.Error != "" {
				v.Data["error"] = d.Error
			}
			if !d.RetryAt.IsZero() {
				v.Data["retry_at"] = d.RetryAt
			}
		}
	case journal.KindEffect:
		var d entry.Effect
		if d, err = entry.DecodeEffect(e.Data); err == nil {
			v.Data = map[string]any{"index": d.Index, "name": d.Name, "result": displayBytes(d.Result)}
		}
	case journal.KindComplete:
		var d entry.Complete
		if d, err = entry.DecodeComplete(e.Data); err == nil {
			v.Data = map[string]any{"attempt": d.N, "at": d.At, "payload": displayBytes(d.Payload)}
			if len(d.Headers) > 0 {
				v.Data["headers"] = d.Headers
			}
		}
	case journal.KindDeadLetter:
		var d entry.DeadLetter
		if d, err = entry.DecodeDeadLetter(e.Data); err == nil {
			v.Data = map[string]any{"attempts": d.N, "reason": d.Reason, "error": d.Error, "at": d.At}
		}
	}
	if err != nil {
		v.Data = map[string]any{"undecodable": err.Error()}
	}
	return v
}

func displayBytes(b []byte) any {
	if len(b) == 0 {
		return nil
	}
	if json.Valid(b) {
		return json.RawMessage(b)
	}
	return string(b)
}
