// Passivation: idle actors leave memory, and memory stays under MaxActors.

package actorhost

import (
	"context"
	"sort"
	"time"
)

// janitor passivates idle actors and keeps memory under MaxActors.
func (h *Host) janitor(ctx context.Context) {
	tick := time.NewTicker(max(min(h.cfg.IdleTimeout/2, time.Second), time.Millisecond))
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		h.passivate(time.Now())
	}
}

func (h *Host) passivate(now time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	var idle []*actor
	for _, a := range h.actors {
		if a.scheduled || len(a.queue) > 0 || (a.lastWrite != nil && !a.lastWrite.durable()) {
			continue
		}
		idle = append(idle, a)
	}
	over := len(h.actors) - h.cfg.MaxActors
	sort.Slice(idle, func(i, j int) bool { return idle[i].lastUsed.Before(idle[j].lastUsed) })
	for _, a := range idle {
		if over > 0 || now.Sub(a.lastUsed) >= h.cfg.IdleTimeout {
			h.dropActor(a.key, a)
			over--
		}
	}
}
