// Package journal is the contract for the durable, per-actor history that
// makes processing exactly-once: every attempt, side-effect result,
// completion and dead-letter outcome, plus checkpoints of actor state.
//
// An actor's entries carry sequence numbers 1, 2, 3, … with no gaps; a
// journal refuses an append whose first sequence is not the actor's next
// one. Writes are fenced by partition epochs: a worker takes a partition's
// epoch with CompareAndSetEpoch, stamps its batches with it, and a batch
// whose epoch is no longer current is refused with ErrFenced. A message has
// at most one outcome (completion or dead letter): a second one is refused
// with ErrDuplicateOutcome. Actors and message IDs keep the identifier
// limits of the channel package (at most 1024 bytes of UTF-8 without
// control characters; see Validate): what breaks them is refused with
// ErrInvalid. Backends live in sub-packages and all pass
// journal/journaltest.
//
// # Checkpoints and compaction
//
// A backend keeps each actor's newest checkpoints (DefaultKeepCheckpoints
// of them unless its options say otherwise) and drops older ones when an
// Append writes a newer one. A backend that compacts bounds its store's
// growth: after an Append saves a checkpoint, the actor's attempt and
// effect entries at or below its oldest kept checkpoint are deleted, and
// outcome entries there lose their Data. The outcomes themselves stay, so
// dedup by message ID keeps working; Read of a compacted range returns
// what is left. An actor's last entry is never deleted. Entries compacted
// are those between the oldest kept checkpoint before the Append and the
// one after it, so turning compaction on later does not reach back into
// older history.
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
	// Actor is the actor's address, "type/id", or a key of the host's own
	// starting with "$".
	Actor string
	Seq   int64 // 1-based, contiguous per actor
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
	// Horizon, when above 0, sets the partition's horizon (see
	// Journal.Horizon), written with the batch and fenced like it; of
	// several batches of one partition in a call, the last one's counts.
	Horizon int64
}

// Journal stores actor histories. Implementations are safe for concurrent
// use by many goroutines, and several processes may share one store when
// the backend says so.
type Journal interface {
	// Append writes batches durably. Batches whose epoch is current are
	// written all together, in one commit where the backend allows it.
	// Entries of one actor must be in sequence order.
	//
	// Batches whose epoch is stale are skipped and reported by a returned
	// *FencedError; the others are still written. An error matching
	// ErrInvalid, ErrSequence or ErrDuplicateOutcome means nothing of the
	// call was written, nor will be if it is retried: IsPermanent says so.
	// Any other error (ErrClosed, ctx's, the store's) means nothing was
	// written and a retry may succeed, except where the backend says the
	// outcome is unknown (a reply lost while committing); retrying the same
	// call is then safe too, and fails with ErrSequence if the first got in.
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

	// Horizon returns the partition's horizon, the last Batch.Horizon
	// written to it; ok is false when none was. It is one value per
	// partition, kept beside the epoch. The host keeps there an offset
	// beyond which no message of the partition has reached a handler, to
	// tell a first delivery from a redelivery on any mailbox.
	Horizon(ctx context.Context, partition string) (offset int64, ok bool, err error)

	// Epoch returns the current epoch of a partition, 0 when never set.
	Epoch(ctx context.Context, partition string) (int64, error)
	// CompareAndSetEpoch sets the partition's epoch to next if it is
	// currently old, and reports whether it did.
	CompareAndSetEpoch(ctx context.Context, partition string, old, next int64) (bool, error)

	Close() error
}

// MaxEntrySeq is the highest sequence an entry may have: 2^53, the most
// every journal stores exactly (a Redis score is a float64), so that a
// journal never takes what another would refuse.
const MaxEntrySeq = int64(1 << 53)

// DefaultKeepCheckpoints is how many of an actor's newest checkpoints
// every backend keeps by default.
const DefaultKeepCheckpoints = 3

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
	// ErrInvalid means Append was given an entry or checkpoint no journal
	// can store: its actor or message ID breaks the identifier limits (see
	// Validate), or its kind is unknown. Nothing of that Append is written;
	// the error names the entry. Retrying cannot help: leave the message
	// out, for example by dead-lettering it.
	ErrInvalid = errors.New("journal: invalid entry")
	// ErrDuplicateOutcome means Append was given an outcome (KindComplete
	// or KindDeadLetter) for an actor's message that already has one, in
	// the store or earlier in the same call. Nothing of that Append is
	// written, so a bug that would apply a message twice stays visible
	// instead of being recorded. Look up the outcome with Journal.Outcome
	// and treat the message as done.
	ErrDuplicateOutcome = errors.New("journal: message already has an outcome")
)

// IsPermanent reports whether err is one that retrying the same Append
// can never cure: ErrInvalid, ErrDuplicateOutcome, ErrSequence or
// ErrFenced. Other errors of Append (a connection lost, a timeout, a
// server out of memory) may pass.
func IsPermanent(err error) bool {
	return errors.Is(err, ErrInvalid) || errors.Is(err, ErrDuplicateOutcome) ||
		errors.Is(err, ErrSequence) || errors.Is(err, ErrFenced)
}

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
