package journal

import (
	"context"
	"fmt"
	"slices"

	"github.com/postbox-dev/postbox/internal/ident"
)

// The checks of Append and CompareAndSetEpoch that every backend makes, in
// the order Append makes them: BeginAppend (Validate), then Fence,
// CheckSequences and CheckOutcomes on what the store holds. A backend that
// checks in its store instead (a script, a constraint) refuses the same
// calls with the same errors.

// Validate reports the first batch, entry or checkpoint that no journal can
// store, with an error matching ErrInvalid, or ErrSequence for a sequence
// below its start. Every backend runs it before Append writes anything; it
// is the one place a batch is validated.
//
// An entry's Seq is 1 to MaxEntrySeq. A batch's Partition is 1 to 1024
// bytes of valid UTF-8 without control characters. An entry's or
// checkpoint's Actor is an address "type/id" or a key starting with "$"; it
// and an entry's MsgID are each 1 to 1024 bytes of valid UTF-8 without
// control characters (U+0000–U+001F, U+007F–U+009F), the limits
// channel.CheckAddress and channel.CheckMessageID apply: every backend's
// store holds such values as they are.
func Validate(batches ...Batch) error {
	for _, b := range batches {
		if err := ident.CheckPartitionKey(b.Partition); err != nil {
			return fmt.Errorf("%w: batch: %w; nothing of this Append was written", ErrInvalid, err)
		}
		if b.Horizon < 0 {
			return fmt.Errorf("%w: partition %q: horizon %d is negative; nothing of this Append was written", ErrInvalid, b.Partition, b.Horizon)
		}
		for _, e := range b.Entries {
			if err := ident.CheckActorKey(e.Actor); err != nil {
				return fmt.Errorf("%w: partition %q entry seq %d: %w; nothing of this Append was written", ErrInvalid, b.Partition, e.Seq, err)
			}
			if e.Seq < 1 {
				return fmt.Errorf("%w: actor %q: entry seq %d, sequences start at 1", ErrSequence, e.Actor, e.Seq)
			}
			if e.Seq > MaxEntrySeq {
				return fmt.Errorf("%w: actor %q: entry seq %d is past 2^53, the largest every journal holds exactly; nothing of this Append was written",
					ErrInvalid, e.Actor, e.Seq)
			}
			if e.Kind < KindAttempt || e.Kind > KindDeadLetter {
				return fmt.Errorf("%w: actor %q entry seq %d has unknown kind %d; nothing of this Append was written", ErrInvalid, e.Actor, e.Seq, e.Kind)
			}
			if err := ident.CheckMessageID(e.MsgID); err != nil {
				return fmt.Errorf("%w: actor %q entry seq %d: %w; nothing of this Append was written", ErrInvalid, e.Actor, e.Seq, err)
			}
		}
		for _, cp := range b.Checkpoints {
			if err := ident.CheckActorKey(cp.Actor); err != nil {
				return fmt.Errorf("%w: partition %q checkpoint seq %d: %w; nothing of this Append was written", ErrInvalid, b.Partition, cp.Seq, err)
			}
			if cp.Seq < 0 {
				return fmt.Errorf("%w: actor %q: checkpoint seq %d is negative", ErrSequence, cp.Actor, cp.Seq)
			}
		}
	}
	return nil
}

// BeginAppend makes the checks every Append makes before it writes, in
// this order: the batches are valid (Validate), the journal is open, ctx
// is live. write is false when there is nothing to write, or an error.
func BeginAppend(ctx context.Context, closed bool, batches []Batch) (write bool, err error) {
	if err := Validate(batches...); err != nil {
		return false, err
	}
	if closed {
		return false, ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return false, err
	}
	return len(batches) > 0, nil
}

// ValidateEpochMove reports a CompareAndSetEpoch no journal may make:
// epochs run from 0 to MaxEntrySeq and only move up, as moving one back
// would unfence a zombie. Every backend runs it before it looks.
func ValidateEpochMove(partition string, old, next int64) error {
	switch {
	case next <= old:
		return fmt.Errorf("journal: epoch of %q from %d to %d: epochs only move up, pass next > old", partition, old, next)
	case old < 0 || next > MaxEntrySeq:
		return fmt.Errorf("journal: epoch of %q from %d to %d: epochs run from 0 to 2^53", partition, old, next)
	}
	return nil
}

// BeginEpochMove makes the checks every CompareAndSetEpoch makes before it
// looks, in this order: the journal is open, the move is one a journal may
// make (ValidateEpochMove).
func BeginEpochMove(closed bool, partition string, old, next int64) error {
	if closed {
		return ErrClosed
	}
	return ValidateEpochMove(partition, old, next)
}

// Fence splits the batches of an Append by epoch: current holds those whose
// Epoch is their partition's, as epoch reports it, in call order (batches
// itself when none is stale), and fenced the partitions of the others,
// each once, for a FencedError. Only current batches are checked further
// and written.
func Fence(batches []Batch, epoch func(partition string) (int64, error)) (current []Batch, fenced []string, err error) {
	current = batches
	for i, b := range batches {
		e, err := epoch(b.Partition)
		if err != nil {
			return nil, nil, err
		}
		if e == b.Epoch {
			if len(fenced) > 0 {
				current = append(current, b)
			}
			continue
		}
		if len(fenced) == 0 {
			current = batches[:i:i] // appending copies
		}
		if !slices.Contains(fenced, b.Partition) {
			fenced = append(fenced, b.Partition)
		}
	}
	return current, fenced, nil
}

// CheckSequences checks that the entries of batches continue their actors'
// histories with no gap and no repeat, and that no checkpoint is past its
// actor's last entry, with an error matching ErrSequence. next(actor)
// points at the actor's next sequence before the call; CheckSequences
// moves it past the actor's entries.
func CheckSequences(batches []Batch, next func(actor string) *int64) error {
	for _, b := range batches {
		for _, e := range b.Entries {
			n := next(e.Actor)
			if e.Seq != *n {
				return fmt.Errorf("%w: actor %q: entry seq %d, want %d: reload the actor's history before appending",
					ErrSequence, e.Actor, e.Seq, *n)
			}
			*n++
		}
	}
	for _, b := range batches {
		for _, cp := range b.Checkpoints {
			if last := *next(cp.Actor) - 1; cp.Seq > last {
				return fmt.Errorf("%w: actor %q: checkpoint at seq %d is past its last entry %d",
					ErrSequence, cp.Actor, cp.Seq, last)
			}
		}
	}
	return nil
}

// CheckOutcomes finds the first outcome entry of batches whose message has
// an outcome already, earlier in batches or in the store, and returns the
// error matching ErrDuplicateOutcome that Append reports for it; nil when
// there is none. stored returns the seq of the outcome the store holds for
// a message, ok false when it holds none.
func CheckOutcomes(batches []Batch, stored func(actor, msgID string) (seq int64, ok bool)) error {
	var inCall map[[2]string]int64 // (actor, msgID) -> seq, made at the first outcome
	for _, b := range batches {
		for _, e := range b.Entries {
			if !e.Kind.IsOutcome() {
				continue
			}
			key := [2]string{e.Actor, e.MsgID}
			if first, ok := inCall[key]; ok {
				return fmt.Errorf("%w: actor %q message %q: %s at seq %d, but seq %d of the same Append is its outcome already; nothing of this Append was written",
					ErrDuplicateOutcome, e.Actor, e.MsgID, e.Kind, e.Seq, first)
			}
			if first, ok := stored(e.Actor, e.MsgID); ok {
				return fmt.Errorf("%w: actor %q message %q: %s at seq %d, but seq %d is its outcome already; nothing of this Append was written",
					ErrDuplicateOutcome, e.Actor, e.MsgID, e.Kind, e.Seq, first)
			}
			if inCall == nil {
				inCall = make(map[[2]string]int64)
			}
			inCall[key] = e.Seq
		}
	}
	return nil
}
