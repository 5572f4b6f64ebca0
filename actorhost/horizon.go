package actorhost

import (
	"fmt"
	"strconv"

	"github.com/postbox-dev/postbox/journal"
)

// A channel that cannot count deliveries (Kafka) reports Deliveries 0, and
// the host would have to journal an attempt before every message so that a
// message killing the process still reaches the DLQ. Instead the host
// journals, per partition, a horizon: an offset no message beyond which has
// been handed to a handler. It is moved ahead in steps, before it is
// needed, so it costs one journal row per horizonStep messages. A message
// at or below the horizon found when the partition was claimed may have
// run before a crash, and is pre-marked as a redelivery; one beyond it is
// surely a first delivery.
const horizonStep = 4096

// horizon is a claim's view of its partition's horizon. Only the claim's
// goroutine uses it.
type horizon struct {
	loaded  bool
	key     string // journal actor the horizon is stored under
	seq     int64  // last seq of key
	before  int64  // the horizon when the claim began
	durable int64  // the journaled horizon
	pending int64  // the horizon being journaled by gen
	gen     *flushGen
}

// horizonActor is the journal key of a partition's horizon. Addresses
// always hold a "/", so it cannot collide with an actor's key.
func horizonActor(partition string) string { return "$horizon:" + partition }

// firstDelivery reports whether msg, from a channel that cannot count
// deliveries, is surely handed out for the first time. It journals the
// horizon ahead when needed, and waits for it only when msg is beyond it.
func (h *Host) firstDelivery(cs *claimState, offset int64) (bool, error) {
	hz := &cs.horizon
	if !hz.loaded {
		if err := h.loadHorizon(cs); err != nil {
			return false, err
		}
	}
	if offset <= hz.before {
		return false, nil
	}
	if hz.gen != nil && (offset > hz.durable || hz.gen.durable()) {
		if err := h.wait(cs, hz.gen); err != nil {
			return false, err
		}
		hz.durable, hz.gen = hz.pending, nil
	}
	switch {
	case offset > hz.durable:
		h.moveHorizon(cs, offset+horizonStep)
		if err := h.wait(cs, hz.gen); err != nil {
			return false, err
		}
		hz.durable, hz.gen = hz.pending, nil
	case hz.gen == nil && offset > hz.durable-horizonStep/2:
		h.moveHorizon(cs, hz.durable+horizonStep)
	}
	return true, nil
}

func (h *Host) moveHorizon(cs *claimState, to int64) {
	hz := &cs.horizon
	hz.seq++
	hz.pending = to
	e := journal.Entry{Actor: hz.key, Seq: hz.seq, Kind: journal.KindAttempt, MsgID: "horizon",
		Data: strconv.AppendInt(nil, to, 10)}
	hz.gen = h.flusher.add(cs.key, cs.epoch, []journal.Entry{e}, nil, nil)
}

// loadHorizon reads the partition's horizon from the journal, retrying
// failures until the claim ends.
func (h *Host) loadHorizon(cs *claimState) error {
	hz := &cs.horizon
	hz.key = horizonActor(cs.key)
	return h.retryJournal(cs, "reading the partition horizon", func() error {
		seq, err := h.cfg.Journal.LastSeq(cs.ctx, hz.key)
		if err != nil {
			return err
		}
		at := int64(-1) // none yet: nothing was handed out under a horizon
		if seq > 0 {
			err = h.cfg.Journal.Read(cs.ctx, hz.key, seq, func(e journal.Entry) error {
				v, err := strconv.ParseInt(string(e.Data), 10, 64)
				if err != nil {
					return fmt.Errorf("horizon entry %d of %s is %q, not an offset: %w", e.Seq, hz.key, e.Data, err)
				}
				at = v
				return nil
			})
			if err != nil {
				return err
			}
		}
		hz.loaded, hz.seq, hz.before, hz.durable = true, seq, at, at
		return nil
	})
}
