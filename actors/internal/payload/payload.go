// Package payload decodes the {"add": <int>} messages that the built-in
// counter and tally actors share, so that both refuse a bad one with the
// same permanent error.
package payload

import (
	"encoding/json"
	"fmt"

	"github.com/postbox-dev/postbox/actorhost"
)

// Decode unmarshals raw into v, a pointer to an actor's payload struct, and
// checks that *add (v's "add" field) was set. A payload that is not JSON,
// or has no integer "add", gets a permanent error that names actorType:
// retrying cannot fix it, so the host dead-letters it at once.
func Decode(actorType string, raw []byte, v any, add **int64) error {
	if err := json.Unmarshal(raw, v); err != nil || *add == nil {
		return actorhost.Permanent(fmt.Errorf("%s: payload %.100q is not {\"add\": <int>}", actorType, raw))
	}
	return nil
}
