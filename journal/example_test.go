package journal_test

import (
	"errors"
	"fmt"

	"github.com/postbox-dev/postbox/journal"
)

// The checks a journal backend runs in Append, in order: Fence sets aside
// the batches of partitions whose epoch has moved on, then CheckSequences
// and CheckOutcomes look at the rest against what the store holds.
func ExampleFence() {
	epochs := map[string]int64{"orders/0": 2, "orders/1": 5}
	batches := []journal.Batch{
		{Partition: "orders/0", Epoch: 2, Entries: []journal.Entry{
			{Actor: "counter/1", Seq: 4, Kind: journal.KindComplete, MsgID: "m4"},
		}},
		{Partition: "orders/1", Epoch: 4}, // a straggler of the previous owner
	}
	current, fenced, _ := journal.Fence(batches, func(p string) (int64, error) { return epochs[p], nil })
	fmt.Println(len(current), fenced)

	next := map[string]*int64{"counter/1": new(int64(4))} // its last stored entry is seq 3
	err := journal.CheckSequences(current, func(actor string) *int64 { return next[actor] })
	fmt.Println(err)

	stored := func(actor, msgID string) (int64, bool) { return 2, msgID == "m4" } // m4's outcome is at seq 2
	err = journal.CheckOutcomes(current, stored)
	fmt.Println(errors.Is(err, journal.ErrDuplicateOutcome))
	// Output:
	// 1 [orders/1]
	// <nil>
	// true
}
