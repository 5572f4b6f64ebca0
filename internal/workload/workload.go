// Package workload generates the counter workloads that the producer's
// load command, the demo, the crash tests and the benchmarks publish, and
// the final state they must produce.
package workload

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"

	"github.com/postbox-dev/postbox/actors/counter"
	"github.com/postbox-dev/postbox/channel"
)

// Spec describes a workload. The same Spec always yields the same messages.
type Spec struct {
	Actors int    // counters counter/0 … counter/N-1
	Count  int    // messages
	Seed   uint64 // varies the adds and the actor order
	// PoisonEvery makes every k-th message invalid (dead-lettered at once).
	// 0: none.
	PoisonEvery int
	// FailEvery makes every k-th message fail its first attempt (retried,
	// then applied). 0: none.
	FailEvery int
	// IDPrefix starts every message ID. Defaults to "load-<seed>".
	IDPrefix string
	// ActorPrefix starts every actor ID (counter/<ActorPrefix><n>), so that
	// a run can share a journal with earlier ones.
	ActorPrefix string
}

// Expected is what a workload must leave behind.
type Expected struct {
	States map[string]counter.State // by address
	Valid  int                      // messages that must be applied
	Poison int                      // messages that must be dead-lettered
}

// Message returns the i-th message of the workload.
func (s Spec) Message(rng *rand.Rand, i int) (channel.Message, int64, bool) {
	prefix := s.IDPrefix
	if prefix == "" {
		prefix = fmt.Sprintf("load-%d", s.Seed)
	}
	actor := rng.IntN(max(s.Actors, 1))
	add := int64(rng.IntN(21) - 5)
	msg := channel.Message{
		ID:      fmt.Sprintf("%s-%d", prefix, i),
		Address: channel.Address{Type: counter.Type, ID: s.ActorPrefix + fmt.Sprint(actor)},
	}
	if s.PoisonEvery > 0 && i%s.PoisonEvery == s.PoisonEvery-1 {
		msg.Payload = []byte(`{"add":"not a number"}`)
		return msg, 0, false
	}
	p := counter.Payload{Add: &add}
	if s.FailEvery > 0 && i%s.FailEvery == s.FailEvery-1 {
		p.FailTimes = 1
	}
	msg.Payload, _ = json.Marshal(p)
	return msg, add, true
}

// Generate calls emit for every message in order and returns the expected
// outcome. emit may stop early by returning an error.
func (s Spec) Generate(emit func(channel.Message) error) (Expected, error) {
	rng := rand.New(rand.NewPCG(s.Seed, s.Seed^0x5eed))
	exp := Expected{States: map[string]counter.State{}}
	for i := range s.Count {
		msg, add, valid := s.Message(rng, i)
		if valid {
			st := exp.States[msg.Address.String()]
			st.Value += add
			st.Applied++
			exp.States[msg.Address.String()] = st
			exp.Valid++
		} else {
			exp.Poison++
		}
		if emit != nil {
			if err := emit(msg); err != nil {
				return exp, err
			}
		}
	}
	return exp, nil
}
