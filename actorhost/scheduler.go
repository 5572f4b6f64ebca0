// The scheduler: route queues each delivery on its actor, and workers run
// one actor at a time, one message at a time per actor.

package actorhost

import (
	"fmt"
	"time"

	"github.com/postbox-dev/postbox/channel"
)

// route queues msg on its actor.
func (h *Host) route(cs *claimState, msg channel.Message, first bool) {
	d := &delivery{msg: msg, id: msg.ID, claim: cs, first: first}
	key, typ := msg.Address.String(), actorType(nil)
	if reason, err := identityError(msg); err != nil {
		// No journal can key it by its own identity: its dead-letter
		// outcome goes to the partition's unaddressed actor instead.
		key, typ = unaddressedActor(cs.key), unhandled{}
		d.id, d.reject, d.reason = journalID(msg.ID), err, reason
	} else if t, ok := h.cfg.Registry.lookup(msg.Address.Type); ok {
		typ = t
	} else {
		typ = unhandled{}
		d.reject, d.reason = fmt.Errorf("%w: %q", ErrUnknownActorType, msg.Address.Type), "unknown actor type"
	}
	cs.mu.Lock()
	cs.inflight = append(cs.inflight, d)
	cs.wg.Add(1)
	cs.mu.Unlock()
	h.m.inFlight.Add(1)

	h.mu.Lock()
	if h.closed {
		// The workers are gone (a hard stop): no one would take it.
		h.mu.Unlock()
		h.abandon(d)
		return
	}
	a := h.actors[key]
	if a == nil {
		a = &actor{addr: msg.Address, key: key, typ: typ, claim: cs}
		h.actors[key] = a
	}
	a.queue = append(a.queue, d)
	if !a.scheduled {
		a.scheduled = true
		h.ready = append(h.ready, a)
		h.cond.Signal()
	}
	h.mu.Unlock()
}

func (h *Host) worker() {
	defer h.workerWG.Done()
	for {
		h.mu.Lock()
		for len(h.ready) == 0 && !h.closed {
			h.cond.Wait()
		}
		if len(h.ready) == 0 {
			h.mu.Unlock()
			return
		}
		a := h.ready[0]
		h.ready[0] = nil
		h.ready = h.ready[1:]
		d := a.queue[0]
		a.queue[0] = nil
		a.queue = a.queue[1:]
		h.mu.Unlock()

		h.process(a, d)

		h.mu.Lock()
		a.lastUsed = time.Now()
		if len(a.queue) > 0 {
			h.ready = append(h.ready, a)
			h.cond.Signal()
		} else {
			a.scheduled = false
		}
		h.mu.Unlock()
	}
}
