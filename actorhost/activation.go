// Activation: an actor rebuilt from its newest checkpoint and the journal
// tail, replayed through its handler with side effects answered from the
// journal; and Replay, the same rebuild for tools.

package actorhost

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/postbox-dev/postbox/channel"
	"github.com/postbox-dev/postbox/internal/entry"
	"github.com/postbox-dev/postbox/journal"
	"go.uber.org/zap"
)

// activate loads a from its checkpoint and journal tail.
func (h *Host) activate(a *actor, cs *claimState) error {
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

// progress is what the journal says about a message with no outcome yet.
type progress struct {
	attempts int
	errors   []attemptData
	effects  map[int]effectRecord
	// deadLetter is the decision to dead-letter it, once journaled.
	deadLetter *attemptData
}

// history is an actor rebuilt from its checkpoint and journal tail.
type history struct {
	state      any
	seq        int64
	checkpoint int64 // sequence of the checkpoint it started from
	replayed   int   // messages re-run from the journal
	answered   int   // side effects answered from the journal during replay
	outcomes   map[string]outcome
	pending    map[string]*progress
	// broken is why the history cannot be replayed: the same on every
	// try, unlike a journal that cannot be read. Replay stops running the
	// handler there but goes on collecting outcomes and progress.
	broken error
}

// rebuild loads the newest checkpoint of actor key (at addr) at or before
// until and replays the journal after it up to until. An error means the
// journal could not be read; a history that does not replay comes back
// with broken set.
func rebuild(ctx context.Context, j journal.Journal, typ actorType, key string, addr channel.Address, until int64, useCheckpoint bool) (*history, error) {
	h := &history{
		state:    typ.newState(),
		outcomes: map[string]outcome{},
		pending:  map[string]*progress{},
	}
	if useCheckpoint {
		cp, ok, err := j.LoadCheckpoint(ctx, key, until)
		if err != nil {
			return nil, fmt.Errorf("load checkpoint of %s: %w", key, err)
		}
		if ok {
			h.seq, h.checkpoint = cp.Seq, cp.Seq
			if st, err := typ.decode(cp.State); err != nil {
				h.broken = fmt.Errorf("checkpoint at seq %d does not decode: %w", cp.Seq, err)
			} else {
				h.state = st
			}
		}
	}
	stop := errors.New("until reached")
	err := j.Read(ctx, key, h.seq+1, func(e journal.Entry) error {
		if e.Seq > until {
			return stop
		}
		if e.Seq != h.seq+1 && h.seq != 0 {
			h.breakOn(fmt.Errorf("journal of %s jumps from seq %d to %d: entries were compacted away; replay from a checkpoint instead", key, h.seq, e.Seq))
		}
		h.seq = e.Seq
		h.apply(ctx, typ, addr, e)
		return ctx.Err() // a handler that saw ctx end did not diverge
	})
	if err != nil && !errors.Is(err, stop) {
		return nil, err
	}
	return h, nil
}

// breakOn records the first reason the history does not replay.
func (h *history) breakOn(err error) {
	if h.broken == nil {
		h.broken = err
	}
}

func (h *history) progressOf(msgID string) *progress {
	p := h.pending[msgID]
	if p == nil {
		p = &progress{}
		h.pending[msgID] = p
	}
	return p
}

func (h *history) apply(ctx context.Context, typ actorType, addr channel.Address, e journal.Entry) {
	corrupt := func(err error) { h.breakOn(fmt.Errorf("journal of %s seq %d: %w", e.Actor, e.Seq, err)) }
	switch e.Kind {
	case journal.KindAttempt:
		d, err := entry.DecodeAttempt(e.Data)
		if err != nil {
			corrupt(err)
			return
		}
		p := h.progressOf(e.MsgID)
		p.attempts = max(p.attempts, d.N)
		switch {
		case d.DeadLetter != "":
			p.deadLetter = &d
		case d.Error != "":
			p.errors = append(p.errors, d)
		}
	case journal.KindEffect:
		d, err := entry.DecodeEffect(e.Data)
		if err != nil {
			corrupt(err)
			return
		}
		p := h.progressOf(e.MsgID)
		if p.effects == nil {
			p.effects = map[int]effectRecord{}
		}
		p.effects[d.Index] = effectRecord{name: d.Name, result: d.Result}
	case journal.KindComplete:
		h.outcomes[e.MsgID] = outcome{kind: e.Kind}
		p := h.pending[e.MsgID]
		delete(h.pending, e.MsgID)
		if h.broken != nil {
			return // the state is unknown from here on; outcomes still count
		}
		if e.Data == nil {
			h.breakOn(fmt.Errorf("journal of %s was compacted up to seq %d or beyond; replay from a checkpoint instead", e.Actor, e.Seq))
			return
		}
		d, err := entry.DecodeComplete(e.Data)
		if err != nil {
			corrupt(err)
			return
		}
		var effects map[int]effectRecord
		if p != nil {
			effects = p.effects
		}
		c := &Context{
			Context: ctx, address: addr, msgID: e.MsgID, attempt: d.N, now: d.At,
			replaying: true, effects: effects,
		}
		msg := Message{ID: e.MsgID, Address: addr, Payload: d.Payload, Headers: d.Headers}
		if err := typ.handle(c, h.state, msg); err != nil {
			if ctx.Err() == nil {
				h.breakOn(fmt.Errorf("replay %s message %s (seq %d): %w", e.Actor, e.MsgID, e.Seq, err))
			}
			return
		}
		h.replayed++
		h.answered += c.answered
	case journal.KindDeadLetter:
		h.outcomes[e.MsgID] = outcome{kind: e.Kind}
		delete(h.pending, e.MsgID)
	}
}

// ReplayOptions choose what Replay rebuilds.
type ReplayOptions struct {
	// Until stops replay after this sequence. Defaults to the newest entry.
	Until int64
	// IgnoreCheckpoints replays the whole journal from sequence 1.
	IgnoreCheckpoints bool
}

// Replayed is an actor's state rebuilt from the journal.
type Replayed struct {
	// State is the state as JSON.
	State json.RawMessage
	// Seq is the last journal entry applied.
	Seq int64
	// Checkpoint is the sequence of the checkpoint replay started from (0:
	// none).
	Checkpoint int64
	// Messages is how many completed messages were re-run.
	Messages int
	// Duration is how long loading and replaying took.
	Duration time.Duration
}

// Replay rebuilds the durable state of the actor at addr from j, exactly as
// a host would on activation, without running any side effect.
func (r *Registry) Replay(ctx context.Context, j journal.Journal, addr channel.Address, opts ReplayOptions) (Replayed, error) {
	typ, ok := r.lookup(addr.Type)
	if !ok {
		return Replayed{}, fmt.Errorf("%w: %q (registered: %v)", ErrUnknownActorType, addr.Type, r.Types())
	}
	until := opts.Until
	if until <= 0 {
		until = journal.MaxSeq
	}
	start := time.Now()
	h, err := rebuild(ctx, j, typ, addr.String(), addr, until, !opts.IgnoreCheckpoints)
	if err != nil {
		return Replayed{}, err
	}
	if h.broken != nil {
		return Replayed{}, fmt.Errorf("%w: %w", ErrBroken, h.broken)
	}
	elapsed := time.Since(start)
	view, err := typ.view(h.state)
	if err != nil {
		return Replayed{}, err
	}
	return Replayed{State: view, Seq: h.seq, Checkpoint: h.checkpoint, Messages: h.replayed, Duration: elapsed}, nil
}
