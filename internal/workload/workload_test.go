package workload

import (
	"reflect"
	"testing"

	"github.com/postbox-dev/postbox/channel"
)

// Duplicates come later, with the ID and payload of their original, and
// change neither the other messages nor the expectation.
func TestDuplicates(t *testing.T) {
	t.Parallel()
	base := Spec{Type: "tally", Actors: 7, Count: 1000, Seed: 5, PoisonEvery: 50}
	var plain []channel.Message
	want, _ := base.Generate(func(m channel.Message) error { plain = append(plain, m); return nil })

	dup := base
	dup.DuplicateEvery = 9
	var got []channel.Message
	exp, _ := dup.Generate(func(m channel.Message) error { got = append(got, m); return nil })
	if exp.Duplicates != 1000/9 || dup.Duplicates() != exp.Duplicates || len(got) != dup.Total() {
		t.Fatalf("%d duplicates (Duplicates() %d), %d messages published (Total() %d)", exp.Duplicates, dup.Duplicates(), len(got), dup.Total())
	}
	want.Duplicates = exp.Duplicates
	if !reflect.DeepEqual(exp, want) {
		t.Errorf("expectation with duplicates %+v, without %+v", exp, want)
	}
	firstAt := map[string]int{}
	var originals []channel.Message
	for i, m := range got {
		if m.Address.Type != "tally" {
			t.Fatalf("message %s addressed to %s", m.ID, m.Address)
		}
		j, seen := firstAt[m.ID]
		if !seen {
			firstAt[m.ID] = i
			originals = append(originals, m)
			continue
		}
		if i <= j || string(got[j].Payload) != string(m.Payload) || got[j].Address != m.Address {
			t.Errorf("duplicate of %s at %d: %+v, original at %d: %+v", m.ID, i, m, j, got[j])
		}
	}
	if !reflect.DeepEqual(originals, plain) {
		t.Error("the first copies of the messages differ from the workload without duplicates")
	}
}
