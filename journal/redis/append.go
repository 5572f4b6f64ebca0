package redis

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/redis/go-redis/v9"

	"github.com/postbox-dev/postbox/journal"
)

// Append implements journal.Journal, as one script call: every batch of
// the call is checked, and the current ones written, atomically. A second
// outcome of a message is refused in the script, as
// journal.ErrDuplicateOutcome.
func (j *Journal) Append(ctx context.Context, batches ...journal.Batch) error {
	if write, err := journal.BeginAppend(ctx, j.closed.Load(), batches); !write {
		return err
	}

	// Keys: the epochs and horizons hashes, then three per actor.
	keys := []string{j.epochsKey(), j.horizonsKey()}
	actorIdx := make(map[string]int)
	actor := func(a string) string {
		k, ok := actorIdx[a]
		if !ok {
			k = len(actorIdx) + 1
			actorIdx[a] = k
			keys = append(keys, j.entriesKey(a), j.outcomesKey(a), j.checkpointsKey(a))
		}
		return strconv.Itoa(k)
	}
	compact := "0"
	if j.compact {
		compact = "1"
	}
	n := 3
	for _, b := range batches {
		n += 5 + 5*len(b.Entries) + 3*len(b.Checkpoints)
	}
	args := make([]any, 0, n)
	args = append(args, j.keep, compact, len(batches))
	for _, b := range batches {
		// A horizon travels as a decimal string, which the script never
		// turns into a (double) number; "" is none.
		h := ""
		if b.Horizon > 0 {
			h = strconv.FormatInt(b.Horizon, 10)
		}
		args = append(args, b.Partition, strconv.FormatInt(b.Epoch, 10), len(b.Entries), len(b.Checkpoints), h)
		for _, e := range b.Entries {
			args = append(args, actor(e.Actor), strconv.FormatInt(e.Seq, 10), strconv.Itoa(int(e.Kind)), e.MsgID, encodeEntry(e))
		}
		for _, cp := range b.Checkpoints {
			args = append(args, actor(cp.Actor), strconv.FormatInt(cp.Seq, 10), encodeCheckpoint(cp))
		}
	}
	actors := make([]string, len(actorIdx)+1)
	for a, k := range actorIdx {
		actors[k] = a
	}

	res, err := appendScript.Run(ctx, j.client, keys, args...).Slice()
	var serverErr redis.Error
	if errors.As(err, &serverErr) {
		// An error reply: the script did not run (for instance Redis is
		// out of memory), or failed on a key of the wrong type.
		return j.failed(fmt.Errorf("journal/redis: append: refused by the server: %w", err))
	}
	if err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil {
			err = ctxErr
		}
		// The script runs whole or not at all, but a reply lost on the way
		// back leaves it unknown whether it ran.
		return j.failed(fmt.Errorf("journal/redis: append: no reply, so it may or may not have been written (appending the same entries again is safe: it fails with a sequence conflict if they were): %w", err))
	}
	status, ok := res[0].(int64)
	if !ok {
		return fmt.Errorf("journal/redis: append: unexpected reply %v", res)
	}
	if status == 1 {
		if len(res) == 1 {
			return nil
		}
		fe := &journal.FencedError{}
		for _, p := range res[1:] {
			s, ok := p.(string)
			if !ok {
				return fmt.Errorf("journal/redis: append: unexpected reply %v", res)
			}
			fe.Partitions = append(fe.Partitions, s)
		}
		return fe
	}
	// A refusal: status, the actor's index in keys, a seq, and what the
	// store holds.
	if len(res) != 4 {
		return fmt.Errorf("journal/redis: append: unexpected reply %v", res)
	}
	k, _ := res[1].(int64)
	seq, _ := res[2].(int64)
	var a string
	if k > 0 && int(k) < len(actors) {
		a = actors[k]
	}
	switch status {
	case 2:
		want, _ := res[3].(int64)
		return fmt.Errorf("%w: actor %q: entry seq %d, want %d: reload the actor's history before appending",
			journal.ErrSequence, a, seq, want)
	case 3:
		last, _ := res[3].(int64)
		return fmt.Errorf("%w: actor %q: checkpoint at seq %d is past its last entry %d",
			journal.ErrSequence, a, seq, last)
	case 4:
		member, _ := res[3].(string)
		first, err := decodeEntry(a, member)
		if err != nil {
			return fmt.Errorf("%w: actor %q: outcome at seq %d: its message has one already; nothing of this Append was written",
				journal.ErrDuplicateOutcome, a, seq)
		}
		return fmt.Errorf("%w: actor %q message %q: outcome at seq %d, but seq %d is its outcome already; nothing of this Append was written",
			journal.ErrDuplicateOutcome, a, first.MsgID, seq, first.Seq)
	}
	return fmt.Errorf("journal/redis: append: unexpected reply %v", res)
}
