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
)

// progress is what the journal says about a message with no outcome yet.
type progress struct {
	attempts int
	errors   []attemptData
	effects  map[int]effectRecord
}

// history is an actor rebuilt from its checkpoint and journal tail.
type history struct {
	state      any
	seq        int64
	checkpoint int64 // sequence of the checkpoint it started from
	replayed   int   // messages re-run from the journal
	answered   int   // side effects answered from the journal during replay
	outcomes   map[string]journal.Kind
	pending    map[string]*progress
}

// rebuild loads addr's newest checkpoint at or before until and replays the
// journal after it up to until.
func rebuild(ctx context.Context, j journal.Journal, typ actorType, addr channel.Address, until int64, useCheckpoint bool) (*history, error) {
	key := addr.String()
	h := &history{
		state:    typ.newState(),
		outcomes: map[string]journal.Kind{},
		pending:  map[string]*progress{},
	}
	if useCheckpoint {
		cp, ok, err := j.LoadCheckpoint(ctx, key, until)
		if err != nil {
			return nil, fmt.Errorf("load checkpoint of %s: %w", key, err)
		}
		if ok {
			st, err := typ.decode(cp.State)
			if err != nil {
				return nil, err
			}
			h.state, h.seq, h.checkpoint = st, cp.Seq, cp.Seq
		}
	}
	stop := errors.New("until reached")
	err := j.Read(ctx, key, h.seq+1, func(e journal.Entry) error {
		if e.Seq > until {
			return stop
		}
		if e.Seq != h.seq+1 && h.seq != 0 {
			return fmt.Errorf("journal of %s jumps from seq %d to %d: entries were compacted away; replay from a checkpoint instead", key, h.seq, e.Seq)
		}
		h.seq = e.Seq
		return h.apply(ctx, typ, addr, e)
	})
	if err != nil && !errors.Is(err, stop) {
		return nil, err
	}
	return h, nil
}

func (h *history) progressOf(msgID string) *progress {
	p := h.pending[msgID]
	if p == nil {
		p = &progress{}
		h.pending[msgID] = p
	}
	return p
}

func (h *history) apply(ctx context.Context, typ actorType, addr channel.Address, e journal.Entry) error {
	switch e.Kind {
	case journal.KindAttempt:
		d, err := entry.DecodeAttempt(e.Data)
		if err != nil {
			return fmt.Errorf("journal of %s seq %d: %w", addr, e.Seq, err)
		}
		p := h.progressOf(e.MsgID)
		p.attempts = max(p.attempts, d.N)
		if d.Error != "" {
			p.errors = append(p.errors, d)
		}
	case journal.KindEffect:
		d, err := entry.DecodeEffect(e.Data)
		if err != nil {
			return fmt.Errorf("journal of %s seq %d: %w", addr, e.Seq, err)
		}
		p := h.progressOf(e.MsgID)
		if p.effects == nil {
			p.effects = map[int]effectRecord{}
		}
		p.effects[d.Index] = effectRecord{name: d.Name, result: d.Result}
	case journal.KindComplete:
		if e.Data == nil {
			return fmt.Errorf("journal of %s was compacted up to seq %d or beyond; replay from a checkpoint instead", addr, e.Seq)
		}
		d, err := entry.DecodeComplete(e.Data)
		if err != nil {
			return fmt.Errorf("journal of %s seq %d: %w", addr, e.Seq, err)
		}
		var effects map[int]effectRecord
		if p := h.pending[e.MsgID]; p != nil {
			effects = p.effects
		}
		c := &Context{
			Context: ctx, address: addr, msgID: e.MsgID, attempt: d.N, now: d.At,
			replaying: true, effects: effects,
		}
		msg := Message{ID: e.MsgID, Address: addr, Payload: d.Payload, Headers: d.Headers}
		if err := runHandler(typ, c, h.state, msg); err != nil {
			return fmt.Errorf("replay %s message %s (seq %d): %w", addr, e.MsgID, e.Seq, err)
		}
		h.replayed++
		h.answered += c.answered
		h.outcomes[e.MsgID] = e.Kind
		delete(h.pending, e.MsgID)
	case journal.KindDeadLetter:
		h.outcomes[e.MsgID] = e.Kind
		delete(h.pending, e.MsgID)
	}
	return nil
}

// runHandler calls the handler, turning a panic into a *PanicError.
func runHandler(typ actorType, c *Context, state any, msg Message) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = &PanicError{Value: r, Stack: stack()}
		}
	}()
	return typ.handle(c, state, msg)
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
	h, err := rebuild(ctx, j, typ, addr, until, !opts.IgnoreCheckpoints)
	if err != nil {
		return Replayed{}, err
	}
	elapsed := time.Since(start)
	view, err := typ.view(h.state)
	if err != nil {
		return Replayed{}, err
	}
	return Replayed{State: view, Seq: h.seq, Checkpoint: h.checkpoint, Messages: h.replayed, Duration: elapsed}, nil
}
