package dlq_test

import (
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
