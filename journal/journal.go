// Package journal is the contract for the durable, per-actor history that
// makes processing exactly-once: every attempt, side-effect result,
// completion and dead-letter outcome, plus checkpoints of actor state.
//
// An actor's entries carry sequence numbers 1, 2, 3, … with no gaps; a
// journal refuses an append whose first sequence is not the actor's next
// one. Writes are fenced by partition epochs: a worker takes a partition's
// epoch with CompareAndSetEpoch, stamps its batches with it, and a batch
// whose epoch is no longer current is refused with ErrFenced. Backends live
// in sub-packages and all pass journal/journaltest.
package journal

import (
	"context"
	"errors"
	"fmt"
)

// Kind says what an entry records.
type Kind uint8

const (
	// KindAttempt records an attempt of a message: started, or failed with
	// an error. Written before a possibly fatal attempt and after a failure.
	KindAttempt Kind = 1
	// KindEffect records the result of one side effect of a message.
	KindEffect Kind = 2
	// KindComplete records that a message was handled successfully. Its data
	// carries what replay needs to run the handler again.
	KindComplete Kind = 3
	// KindDeadLetter records that a message was sent to the dead-letter queue.
	KindDeadLetter Kind = 4
)

func (k Kind) String() string {
	switch k {
	case KindAttempt:
		return "attempt"
	case KindEffect:
		return "effect"
	case KindComplete:
		return "complete"
	case KindDeadLetter:
		return "dead-letter"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// IsOutcome reports whether k ends a message's processing.
func (k Kind) IsOutcome() bool { return k == KindComplete || k == KindDeadLetter }

// Entry is one record of an actor's history. Data is opaque to the journal.
type Entry struct {
	Actor string // the actor's address, "type/id"
	Seq   int64  // 1-based, contiguous per actor
	Kind  Kind
	MsgID string
	Data  []byte
}

// Checkpoint is an actor's encoded state after entry Seq.
type Checkpoint struct {
	Actor string
	Seq   int64
	State []byte
}

// Batch is the unit of fenced writing: entries and checkpoints of actors
// that live in one partition, written under that partition's epoch.
type Batch struct {
	Partition   string
	Epoch       int64
	Entries     []Entry
	Checkpoints []Checkpoint
}

// Journal stores actor histories. Implementations are safe for concurrent
// use by many goroutines, and several processes may share one store when
// the backend says so.
type Journal interface {
	// Append writes batches durably. Batches whose epoch is current are
	// written all together, in one commit where the backend allows it.
	// Batches whose epoch is stale are skipped and reported by a returned
	// *FencedError; the others are still written. Any other error means
	// nothing was written. Entries of one actor must be in sequence order.
	Append(ctx context.Context, batches ...Batch) error

	// Read calls fn for the entries of actor with Seq >= from, in order,
	// until fn returns an error (which Read returns) or entries run out.
	Read(ctx context.Context, actor string, from int64, fn func(Entry) error) error

	// LastSeq returns the highest sequence of actor, 0 when it has none.
	LastSeq(ctx context.Context, actor string) (int64, error)

	// Outcome returns the completion or dead-letter entry of msgID for
	// actor, if there is one. Compaction never removes outcomes.
	Outcome(ctx context.Context, actor, msgID string) (Entry, bool, error)

	// LoadCheckpoint returns the newest checkpoint of actor with
	// Seq <= atOrBefore (use MaxSeq for the newest of all).
	LoadCheckpoint(ctx context.Context, actor string, atOrBefore int64) (Checkpoint, bool, error)

	// Epoch returns the current epoch of a partition, 0 when never set.
	Epoch(ctx context.Context, partition string) (int64, error)
	// CompareAndSetEpoch sets the partition's epoch to next if it is
	// currently old, and reports whether it did.
	CompareAndSetEpoch(ctx context.Context, partition string, old, next int64) (bool, error)

	Close() error
}

// MaxSeq selects the newest checkpoint in LoadCheckpoint.
const MaxSeq = int64(1<<63 - 1)

// Errors a journal returns. Wrapped errors match with errors.Is.
var (
	// ErrFenced means a batch carried a stale epoch: another worker owns the
	// partition now. The writer must stop processing that partition and
	// acknowledge nothing more from it.
	ErrFenced = errors.New("journal: partition fenced by a newer epoch")
	// ErrSequence means an append did not continue the actor's history
	// (another writer extended it, or the caller's view is stale).
	ErrSequence = errors.New("journal: sequence conflict")
	// ErrClosed is returned by calls on a closed journal.
	ErrClosed = errors.New("journal: closed")
)

// FencedError lists the partitions whose batches Append refused.
type FencedError struct {
	Partitions []string
}

func (e *FencedError) Error() string {
	return fmt.Sprintf("journal: partitions %v fenced by a newer epoch", e.Partitions)
}

// Unwrap makes errors.Is(err, ErrFenced) true.
func (e *FencedError) Unwrap() error { return ErrFenced }

// Fenced reports whether partition is among those err names as fenced.
func Fenced(err error, partition string) bool {
	var fe *FencedError
	if !errors.As(err, &fe) {
		return false
	}
	for _, p := range fe.Partitions {
		if p == partition {
			return true
		}
	}
	return false
}

// AcquireEpoch takes ownership of a partition by moving its epoch one up,
// retrying the compare-and-set on races, and returns the new epoch.
func AcquireEpoch(ctx context.Context, j Journal, partition string) (int64, error) {
	for {
		cur, err := j.Epoch(ctx, partition)
		if err != nil {
			return 0, err
		}
		ok, err := j.CompareAndSetEpoch(ctx, partition, cur, cur+1)
		if err != nil {
			return 0, err
		}
		if ok {
			return cur + 1, nil
		}
		if err := ctx.Err(); err != nil {
			return 0, err
		}
	}
}
