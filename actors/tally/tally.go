// Package tally is the built-in actor with no side effect: it sums
// integers, as the counter does, and does nothing else. The crash tests run
// it to check that the host applies each message exactly once when there is
// no journaled effect result to fall back on: its state alone shows a
// message applied twice or lost.
//
// The name "tally" and the shapes below are a contract, like the
// counter's: the worker binary registers it under that name, and the
// producer's load command and the tests publish to it. Payload
// {"add": <int>} adds to the value; other fields are ignored. State is
// {"value": <sum>, "applied": <count>}. A payload that is not JSON, or has
// no integer "add", is a permanent error, the counter's: dead-lettered on
// its first attempt.
package tally

import (
	"github.com/postbox-dev/postbox/actorhost"
	"github.com/postbox-dev/postbox/actors/counter"
	"github.com/postbox-dev/postbox/actors/internal/payload"
)

// Type is the actor type tallies register under.
const Type = "tally"

// State is a tally's state: the counter's, {"value": <sum>, "applied":
// <count>}.
type State = counter.State

// Payload is a tally message.
type Payload struct {
	Add *int64 `json:"add"`
}

// Register registers the tally type on reg.
func Register(reg *actorhost.Registry) error {
	return actorhost.Register(reg, Type, Handler())
}

// Handler returns the tally's handler. It reads nothing from ctx and makes
// no side effect.
func Handler() actorhost.Handler[State] {
	return func(_ *actorhost.Context, s *State, msg actorhost.Message) error {
		var p Payload
		if err := payload.Decode(Type, msg.Payload, &p, &p.Add); err != nil {
			return err
		}
		s.Value += *p.Add
		s.Applied++
		return nil
	}
}
