package dlq_test

import (
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/postbox-dev/postbox/dlq"
)

// The order every store redrives in: by address, then source partition and
// offset, then dead-lettering time. counter/1's messages go back in the
// order they were first published, though they were dead-lettered in
// another.
func ExampleCompareRedrive() {
	at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	envs := []dlq.Envelope{
		{MessageID: "m9", Address: "counter/1", Source: dlq.Source{Partition: 3, Offset: 90}, DeadLetteredAt: at},
		{MessageID: "m2", Address: "counter/2", Source: dlq.Source{Partition: 0, Offset: 5}, DeadLetteredAt: at},
		{MessageID: "m4", Address: "counter/1", Source: dlq.Source{Partition: 3, Offset: 40}, DeadLetteredAt: at.Add(time.Hour)},
		{MessageID: "m7", Address: "counter/1", Source: dlq.Source{Partition: 3, Offset: 40}, DeadLetteredAt: at},
	}
	slices.SortStableFunc(envs, func(a, b dlq.Envelope) int { return dlq.CompareRedrive(&a, &b) })
	for _, e := range envs {
		fmt.Println(e.Address, e.MessageID)
	}
	// Output:
	// counter/1 m7
	// counter/1 m4
	// counter/1 m9
	// counter/2 m2
}

// Pick as Redrive uses it (strict: an unknown ID fails the call) and as
// Purge does (the unknown ID is skipped); each ID counts once.
func ExamplePick() {
	letters := map[string]string{"dl-1": "counter/1", "dl-2": "counter/2"}
	find := func(id string) (string, bool, error) {
		addr, ok := letters[id]
		return addr, ok, nil
	}
	all := func() ([]string, error) { return []string{"counter/1", "counter/2"}, nil }

	picked, err := dlq.Pick([]string{"dl-2", "dl-1", "dl-2"}, true, all, find)
	fmt.Println(picked, err)
	_, err = dlq.Pick([]string{"dl-1", "dl-9"}, true, all, find)
	fmt.Println(errors.Is(err, dlq.ErrNotFound))
	picked, _ = dlq.Pick([]string{"dl-1", "dl-9"}, false, all, find)
	fmt.Println(picked)
	picked, _ = dlq.Pick(nil, true, all, find)
	fmt.Println(picked)
	// Output:
	// [counter/2 counter/1] <nil>
	// true
	// [counter/1]
	// [counter/1 counter/2]
}

// A message dead-lettered twice keeps one dead letter: stores without an
// index of their own key it by IDOf.
func ExampleIDOf() {
	fmt.Println(dlq.IDOf("m1") == dlq.IDOf("m1"), dlq.IDOf("m1") == dlq.IDOf("m2"), len(dlq.IDOf("m1")))
	// Output: true false 35
}
