// Writing the journal through the group commit, and waiting for it.

package actorhost

import (
	"fmt"

	"github.com/postbox-dev/postbox/journal"
	"go.uber.org/zap"
)

// afterFlush runs finish(d) once the write it depends on is durable, or
// abandons d if that write was refused.
func (h *Host) afterFlush(d *delivery) func(*flushGen) {
	return func(g *flushGen) {
		if err := g.errFor(d.claim.key, d.claim.epoch); err != nil {
			if g.refused(err) {
				h.giveUp(d.claim, err)
			}
			h.abandon(d)
			return
		}
		h.finish(d)
	}
}

// wait blocks until g is durable and returns its outcome for the claim.
func (h *Host) wait(cs *claimState, g *flushGen) error {
	select {
	case <-g.done:
	case <-cs.ctx.Done():
		if !g.durable() { // when both are ready, a refusal still counts
			return ErrAbandoned
		}
	}
	if err := g.errFor(cs.key, cs.epoch); err != nil {
		if g.refused(err) {
			h.giveUp(cs, err)
		}
		return fmt.Errorf("%w: %w", ErrAbandoned, err)
	}
	return nil
}

// append journals one entry of a's and returns its generation.
func (h *Host) append(a *actor, cs *claimState, kind journal.Kind, msgID string, data []byte, cp bool, then func(*flushGen)) *flushGen {
	a.seq++
	e := journal.Entry{Actor: a.key, Seq: a.seq, Kind: kind, MsgID: msgID, Data: data}
	var c *journal.Checkpoint
	if cp && a.broken == nil { // a broken actor's state is not its history's
		if st, err := a.typ.encode(a.state); err == nil {
			c = &journal.Checkpoint{Actor: a.key, Seq: a.seq, State: st}
		} else {
			h.log.Warn("encoding state for a checkpoint failed; skipping it", zap.String("actor", a.key), zap.Error(err))
		}
	}
	g := h.flusher.add(cs.key, cs.epoch, []journal.Entry{e}, c, then)
	a.lastGen = g
	return g
}
