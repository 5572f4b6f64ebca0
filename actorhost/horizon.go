package actorhost

import (
	"math"
)

// A message that may have run before a crash must have its attempt
// journaled before it runs again, so that a message killing the process
// still reaches the DLQ; a first delivery need not pay for that. The host
// tells them apart the same way on every mailbox: per partition it keeps a
// horizon in the journal (journal.Batch.Horizon), an offset below which
// messages may have reached a handler and at or beyond which none has. A
// message below the horizon found when the partition was claimed counts as
// a redelivery; one at or beyond it is surely a first delivery.
//
// The horizon is moved ahead of the messages in steps of horizonStep
// messages, riding on the group commit, so a write waits for it only when
// it falls behind. A claim that ends with its epoch still current sets it
// back to just past what it took, so that after a rebalance or a restart
// only the messages that were in flight count as redeliveries; after a
// crash, at most a step's worth more.
const horizonStep = 4096

// horizon is a claim's view of its partition's horizon. Only the claim's
// goroutine uses it, and endClaim after that goroutine is done.
type horizon struct {
	loaded  bool
	before  int64 // the horizon when the claim began
	durable int64 // the journaled horizon
	pending int64 // the horizon being journaled by write
	write   *ticket

	// The messages seen, for the spacing of their offsets.
	seen        int64
	first, last int64
}

// span is how far ahead of an offset the horizon is set: horizonStep
// messages at the offset spacing seen so far, at most maxSpan. Kafka's
// offsets are dense, a SQLite mailbox's interleave with the other
// partitions', and a Redis stream's carry the time.
func (hz *horizon) span() int64 {
	gap := int64(1)
	if hz.seen > 1 {
		gap = max(1, (hz.last-hz.first)/(hz.seen-1))
	}
	return min(gap, maxSpan/horizonStep) * horizonStep
}

// maxSpan bounds a span: a horizon left far ahead by a crashed owner makes
// every message below it a redelivery until the offsets pass it. On Redis,
// 2^50 is about 12 days of stream time.
const maxSpan = 1 << 50

// ahead returns from moved ahead by a span, at most to math.MaxInt64.
func (hz *horizon) ahead(from int64) int64 {
	if s := hz.span(); from <= math.MaxInt64-s {
		return from + s
	}
	return math.MaxInt64
}

// firstDelivery reports whether the message at offset is surely handed out
// for the first time. It journals the horizon ahead when needed, and waits
// for it only when the message is beyond it.
func (h *Host) firstDelivery(cs *claimState, offset int64) (bool, error) {
	hz := &cs.horizon
	if !hz.loaded {
		if err := h.loadHorizon(cs); err != nil {
			return false, err
		}
	}
	if hz.seen == 0 {
		hz.first = offset
	}
	hz.seen++
	hz.last = max(hz.last, offset)
	if offset < hz.before {
		return false, nil
	}
	if hz.write != nil && (offset >= hz.durable || hz.write.durable()) {
		if err := h.wait(cs, hz.write); err != nil {
			return false, err
		}
		hz.durable, hz.write = hz.pending, nil
	}
	switch {
	case offset >= hz.durable:
		h.moveHorizon(cs, hz.ahead(offset+1))
		if err := h.wait(cs, hz.write); err != nil {
			return false, err
		}
		hz.durable, hz.write = hz.pending, nil
	case hz.write == nil && offset >= hz.durable-hz.span()/2:
		h.moveHorizon(cs, hz.ahead(hz.durable))
	}
	return true, nil
}

func (h *Host) moveHorizon(cs *claimState, to int64) {
	hz := &cs.horizon
	hz.pending = to
	hz.write = h.flusher.setHorizon(cs.key, cs.epoch, to)
}

// settleHorizon sets the horizon of an ending claim back to just past the
// last message it took, or where the claim found it if that is further:
// those may have run under an earlier owner.
func (h *Host) settleHorizon(cs *claimState) {
	hz := &cs.horizon
	if !hz.loaded || hz.seen == 0 {
		return
	}
	exact := max(hz.before, hz.last+1)
	if exact == hz.durable && hz.write == nil {
		return
	}
	// Refused or cut short, the horizon stays further ahead: still safe.
	_ = h.wait(cs, h.flusher.setHorizon(cs.key, cs.epoch, exact))
}

// loadHorizon reads the partition's horizon from the journal, retrying
// failures until the claim ends.
func (h *Host) loadHorizon(cs *claimState) error {
	hz := &cs.horizon
	return h.retry(cs, "reading the partition horizon", func() error {
		at, _, err := h.cfg.Journal.Horizon(cs.ctx, cs.key)
		if err != nil {
			return err
		}
		hz.loaded, hz.before, hz.durable = true, at, at
		return nil
	})
}
