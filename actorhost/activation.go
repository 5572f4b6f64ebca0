// Activation: an actor rebuilt from its checkpoint and journal tail, and
// dropped again.

package actorhost

import (
	"github.com/postbox-dev/postbox/journal"
	"go.uber.org/zap"
)

// activate loads a from its checkpoint and journal tail.
func (h *Host) activate(a *actor, cs *claimState) error {
	if a.lastGen != nil {
		// Writes of an earlier activation must be readable first.
		if err := h.wait(cs, a.lastGen); err != nil {
			return err
		}
	}
	hist, err := rebuild(cs.ctx, h.cfg.Journal, a.typ, a.key, a.addr, journal.MaxSeq, true)
	if err != nil {
		return err
	}
	h.deactivate(a)
	if hist.broken != nil {
		h.m.brokenActors.Add(1)
		h.log.Error("actor cannot be rebuilt from its journal: its messages are dead-lettered until the cause is fixed (then redrive them)",
			zap.String("actor", a.key), zap.Error(hist.broken))
	}
	h.m.activeActors.Add(1)
	a.active, a.state, a.seq, a.broken = true, hist.state, hist.seq, hist.broken
	a.outcomes, a.pending = hist.outcomes, hist.pending
	a.outcomesWhole = hist.checkpoint == 0
	a.sinceCheckpoint = int(hist.seq - hist.checkpoint)
	h.m.activations.Add(1)
	h.m.replayed.Add(int64(hist.replayed))
	h.m.effectsAnswered.Add(int64(hist.answered))
	return nil
}

func (h *Host) deactivate(a *actor) {
	if a.active {
		a.active = false
		a.state = nil
		h.m.activeActors.Add(-1)
	}
	if a.broken != nil {
		a.broken = nil
		h.m.brokenActors.Add(-1)
	}
}
