// Package workload generates the counter (or tally) workloads that the
// producer's load command, the demo, the crash tests and the benchmarks
// publish, and the final state they must produce.
package workload

import (
	"cmp"
	"container/heap"
	"encoding/json"
	"fmt"
	"math/rand/v2"

	"github.com/postbox-dev/postbox/actors/counter"
	"github.com/postbox-dev/postbox/channel"
)

// Spec describes a workload. The same Spec always yields the same messages.
type Spec struct {
	// Type is the actors' type: any type whose payload is {"add": <int>}
	// and whose state is the counter's, such as tally. Defaults to
	// counter.
	Type   string
	Actors int    // actors TYPE/0 … TYPE/N-1
	Count  int    // distinct messages
	Seed   uint64 // varies the adds and the actor order
	// PoisonEvery makes every k-th message invalid (dead-lettered at once).
	// 0: none.
	PoisonEvery int
	// FailEvery makes every k-th message fail its first attempt (retried,
	// then applied), through the counter's "failTimes". 0: none.
	FailEvery int
	// DuplicateEvery publishes every k-th message a second time, with the
	// same ID, later in the run (1 to Count/4 messages later, drawn from
	// the seed): a redelivery the host must not apply again. 0: none.
	DuplicateEvery int
	// IDPrefix starts every message ID. Defaults to "load-<seed>".
	IDPrefix string
	// ActorPrefix starts every actor ID (counter/<ActorPrefix><n>), so that
	// a run can share a journal with earlier ones.
	ActorPrefix string
}

// Expected is what a workload must leave behind. Duplicates count once.
type Expected struct {
	States     map[string]counter.State // by address
	Valid      int                      // messages that must be applied
	Poison     int                      // messages that must be dead-lettered
	Duplicates int                      // messages published twice
}

// Duplicates returns how many messages are published a second time.
func (s Spec) Duplicates() int {
	if s.DuplicateEvery <= 0 {
		return 0
	}
	return s.Count / s.DuplicateEvery
}

// Total returns how many messages are published, duplicates included.
func (s Spec) Total() int { return s.Count + s.Duplicates() }

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
		Address: channel.Address{Type: cmp.Or(s.Type, counter.Type), ID: s.ActorPrefix + fmt.Sprint(actor)},
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

// Generate calls emit for every message in order, duplicates included,
// and returns the expected outcome. emit may stop early by returning an
// error.
func (s Spec) Generate(emit func(channel.Message) error) (Expected, error) {
	rng := rand.New(rand.NewPCG(s.Seed, s.Seed^0x5eed))
	// Its own source, so that duplicates leave the other messages as they
	// are without them.
	dupRng := rand.New(rand.NewPCG(s.Seed, s.Seed^0xd0b1e))
	exp := Expected{States: map[string]counter.State{}}
	var later dueQueue
	send := func(m channel.Message) error {
		if emit == nil {
			return nil
		}
		return emit(m)
	}
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
		if err := send(msg); err != nil {
			return exp, err
		}
		if s.DuplicateEvery > 0 && i%s.DuplicateEvery == s.DuplicateEvery-1 {
			exp.Duplicates++
			heap.Push(&later, due{at: i + 1 + dupRng.IntN(max(1, s.Count/4)), seq: i, msg: msg})
		}
		for len(later) > 0 && later[0].at <= i {
			if err := send(heap.Pop(&later).(due).msg); err != nil {
				return exp, err
			}
		}
	}
	for len(later) > 0 {
		if err := send(heap.Pop(&later).(due).msg); err != nil {
			return exp, err
		}
	}
	return exp, nil
}

// due is a duplicate waiting to be published after message at.
type due struct {
	at, seq int
	msg     channel.Message
}

// dueQueue is a min-heap of duplicates by due position, then by original.
type dueQueue []due

func (q dueQueue) Len() int { return len(q) }
func (q dueQueue) Less(i, j int) bool {
	return q[i].at < q[j].at || (q[i].at == q[j].at && q[i].seq < q[j].seq)
}
func (q dueQueue) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *dueQueue) Push(x any)   { *q = append(*q, x.(due)) }
func (q *dueQueue) Pop() any {
	old := *q
	x := old[len(old)-1]
	*q = old[:len(old)-1]
	return x
}
