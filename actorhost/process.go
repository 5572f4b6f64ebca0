// Processing: one delivery from dedup through its attempts, retries and
// dead letter to its end, with the journal writes it makes on the way and
// the watermark that acks it in offset order.

package actorhost

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/postbox-dev/postbox/channel"
	"github.com/postbox-dev/postbox/dlq"
	"github.com/postbox-dev/postbox/journal"
	"go.uber.org/zap"
)

// process takes one delivery through dedup, attempts, retries and the
// outcome. The worker calling it owns a.
func (h *Host) process(a *actor, d *delivery) {
	cs := d.claim
	if cs.isStopping() || cs.ctx.Err() != nil {
		h.abandon(d)
		return
	}
	h.mu.Lock()
	if a.claim != cs {
		// The partition was given up and claimed again: what we hold may be
		// stale, so rebuild from the journal.
		h.deactivate(a)
		a.claim, a.lastWrite = cs, nil
	}
	h.mu.Unlock()
	if err := h.ensureActive(a, cs); err != nil {
		h.abandon(d)
		return
	}

	// Dedup: outcomes since the last checkpoint, and those not yet durable,
	// are in memory; older ones are in the journal's outcome index. Both
	// catch redeliveries and messages published twice with one ID.
	if o, done := a.outcomes[d.id]; done {
		h.deduplicated(d, o.write)
		return
	}
	if !a.outcomesWhole {
		done, err := h.lookupOutcome(a, cs, d.id)
		if err != nil {
			h.deactivate(a)
			h.abandon(d)
			return
		}
		if done {
			h.deduplicated(d, nil)
			return
		}
	}

	// Only attempts the journal knows of count: a redelivery may never have
	// reached the handler (it was queued behind its actor at a crash).
	p := a.progress(d.id)
	prior := p.attempts
	switch {
	case p.deadLetter != nil:
		// Decided before a crash or a lost write: finish that dead letter.
		h.deadLetter(a, d, p.deadLetter.N, errors.New(p.deadLetter.Error), p.deadLetter.DeadLetter)
		return
	case d.reject != nil:
		h.deadLetter(a, d, prior, d.reject, d.reason)
		return
	case a.broken != nil:
		h.deadLetter(a, d, prior, fmt.Errorf("%w: %w", ErrBroken, a.broken), "actor cannot be activated")
		return
	case prior >= h.cfg.MaxAttempts:
		h.deadLetter(a, d, prior, errors.New("attempts exhausted: the process died or was stopped during every attempt"), "attempts exhausted")
		return
	}
	if !h.awaitRetry(cs, d, p) {
		return
	}
	n := prior + 1
	if !d.first {
		// This message may have killed the process before: count the
		// attempt durably before running it, so a crash loop ends in the DLQ.
		g := h.append(a, cs, journal.KindAttempt, d.id, mustJSON(attemptData{N: n, At: time.Now()}), false, nil)
		p.attempts = n
		if err := h.wait(cs, g); err != nil {
			h.deactivate(a)
			h.abandon(d)
			return
		}
	}

	for {
		now := time.Now().UTC().Round(0)
		err := h.attempt(a, d, n, now)
		if err == nil {
			return
		}
		if errors.Is(err, ErrAbandoned) || cs.ctx.Err() != nil {
			h.deactivate(a)
			h.abandon(d)
			return
		}
		// Record the failure, and roll the state back by rebuilding it from
		// the journal on the next attempt.
		delay := h.backoff(n)
		fail := attemptData{N: n, Error: err.Error(), At: now, RetryAt: now.Add(delay)}
		h.append(a, cs, journal.KindAttempt, d.id, mustJSON(fail), false, nil)
		p := a.progress(d.id)
		p.attempts = n
		p.errors = append(p.errors, fail)
		h.deactivate(a)
		h.log.Info("attempt failed", zap.String("actor", a.key), zap.String("message", d.id), zap.Int("attempt", n), zap.Error(err))

		if IsPermanent(err) || n >= h.cfg.MaxAttempts {
			// Rebuilt first: the dead letter is journaled after the failure.
			if err := h.ensureActive(a, cs); err != nil {
				h.abandon(d)
				return
			}
			reason := "attempts exhausted"
			if IsPermanent(err) {
				reason = "permanent error"
			}
			h.deadLetter(a, d, n, err, reason)
			return
		}
		h.m.retried.Add(1)
		if !h.sleep(cs, d, delay) {
			return
		}
		if err := h.ensureActive(a, cs); err != nil {
			h.abandon(d)
			return
		}
		n++
	}
}

// append journals one entry of a's and returns its write.
func (h *Host) append(a *actor, cs *claimState, kind journal.Kind, msgID string, data []byte, cp bool, then func(error)) *ticket {
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
	t := h.flusher.add(cs.key, cs.epoch, []journal.Entry{e}, c, then)
	a.lastWrite = t
	return t
}

// wait blocks until t is durable. An error (ErrAbandoned) means the claim
// ended first or the write failed; a refused write has ended the claim
// already (see Host.refused).
func (h *Host) wait(cs *claimState, t *ticket) error {
	select {
	case <-t.done():
	case <-cs.ctx.Done():
		if !t.durable() {
			return ErrAbandoned
		}
	}
	if err := t.err(); err != nil {
		return fmt.Errorf("%w: %w", ErrAbandoned, err)
	}
	return nil
}

// afterFlush ends d once the write it waits on is known: finished when
// durable, abandoned when not.
func (h *Host) afterFlush(d *delivery) func(error) {
	return func(err error) {
		if err != nil {
			h.abandon(d)
			return
		}
		h.finish(d)
	}
}

// A delivery ends one of two ways: abandoned (not acked, so delivered
// again) or finished (acked in offset order).

// abandon gives up d without acking it; it will be delivered again.
func (h *Host) abandon(d *delivery) {
	d.claim.wg.Done()
	h.m.inFlight.Add(-1)
}

// finish marks d done and acks every done delivery at the head of its
// claim: the watermark.
func (h *Host) finish(d *delivery) {
	cs := d.claim
	cs.mu.Lock()
	if cs.fenced || cs.lost {
		cs.mu.Unlock()
		h.abandon(d)
		return
	}
	d.done = true
	n := 0
	for n < len(cs.inflight) && cs.inflight[n].done {
		n++
	}
	if n > 0 {
		acks := make([]channel.Message, n)
		for i := range n {
			acks[i] = cs.inflight[i].msg
			cs.inflight[i] = nil
		}
		cs.inflight = cs.inflight[n:]
		if err := cs.claim.Ack(cs.ctx, acks...); err != nil {
			h.log.Warn("ack failed; the messages will be delivered again and deduplicated", zap.Error(err))
		}
		select {
		case cs.room <- struct{}{}:
		default:
		}
	}
	cs.mu.Unlock()
	cs.wg.Done()
	h.m.inFlight.Add(-1)
}

// sleep waits out a retry's backoff. If the claim stops first, d is given
// up unacked (false): the failed attempt's journal entry holds when the
// retry is due, and the next owner waits out the rest (see awaitRetry).
// Nothing of the wait lives only in memory.
func (h *Host) sleep(cs *claimState, d *delivery, delay time.Duration) bool {
	if sleepUnless(delay, cs.stopping, cs.ctx.Done()) {
		return true
	}
	h.abandon(d)
	return false
}

// awaitRetry waits, before a redelivered message runs again, for the rest
// of a backoff that the journal says is not over: its last attempt failed
// with a RetryAt still ahead (a host stopped or died during the backoff).
// It waits at most that backoff's own length, whatever the clocks of the
// two hosts say. false: the claim stopped first and d was given up.
func (h *Host) awaitRetry(cs *claimState, d *delivery, p *progress) bool {
	if len(p.errors) == 0 {
		return true
	}
	last := p.errors[len(p.errors)-1]
	if last.N != p.attempts || last.RetryAt.IsZero() {
		return true // a later attempt started: the backoff was over
	}
	wait := min(time.Until(last.RetryAt), last.RetryAt.Sub(last.At))
	if wait <= 0 {
		return true
	}
	return h.sleep(cs, d, wait)
}

func (a *actor) progress(msgID string) *progress {
	if a.pending == nil {
		a.pending = map[string]*progress{}
	}
	p := a.pending[msgID]
	if p == nil {
		p = &progress{}
		a.pending[msgID] = p
	}
	return p
}

// attempt runs the handler once. On success the completion is queued for
// the journal and the delivery is acked once it is durable.
func (h *Host) attempt(a *actor, d *delivery, n int, now time.Time) error {
	cs := d.claim
	msg := d.msg
	p := a.progress(d.id)
	c := &Context{
		Context: cs.ctx, address: a.addr, msgID: msg.ID, attempt: n, now: now,
		baseLog: h.log,
	}
	if len(p.effects) > 0 {
		c.effects = make(map[int]effectRecord, len(p.effects))
		for i, r := range p.effects {
			c.effects[i] = r
		}
	}
	c.record = func(idx int, name string, result []byte) error {
		g := h.append(a, cs, journal.KindEffect, d.id, mustJSON(effectData{Index: idx, Name: name, Result: result}), false, nil)
		if p.effects == nil {
			p.effects = map[int]effectRecord{}
		}
		p.effects[idx] = effectRecord{name: name, result: result}
		return h.wait(cs, g)
	}
	start := time.Now()
	err := a.typ.handle(c, a.state, Message{ID: msg.ID, Address: msg.Address, Payload: msg.Payload, Headers: msg.Headers})
	h.m.handlerSeconds.WithLabelValues(a.addr.Type).Observe(time.Since(start).Seconds())
	h.m.effectsExecuted.Add(int64(c.executed))
	h.m.effectsAnswered.Add(int64(c.answered))
	if err != nil {
		return err
	}
	data := mustJSON(completeData{N: n, At: now, Payload: msg.Payload, Headers: msg.Headers})
	ack := h.afterFlush(d)
	h.journalOutcome(a, d, journal.KindComplete, data, func(err error) {
		if err == nil {
			h.m.processed.Add(1) // counted once durable
		}
		ack(err)
	})
	return nil
}

// journalOutcome queues d's outcome, with a checkpoint every
// CheckpointEvery outcomes, and then runs once it is durable (or refused).
func (h *Host) journalOutcome(a *actor, d *delivery, kind journal.Kind, data []byte, then func(error)) {
	a.sinceCheckpoint++
	checkpoint := a.sinceCheckpoint >= h.cfg.CheckpointEvery
	if checkpoint {
		a.sinceCheckpoint = 0
		// Outcomes the journal holds are found there from here on; those
		// still on their way to it must stay, or a duplicate arriving now
		// would run again.
		for id, o := range a.outcomes {
			if o.write == nil || o.write.durable() {
				delete(a.outcomes, id)
			}
		}
		a.outcomesWhole = false
	}
	t := h.append(a, d.claim, kind, d.id, data, checkpoint, then)
	a.outcomes[d.id] = outcome{kind: kind, write: t}
	delete(a.pending, d.id)
}

// deduplicated acks a delivery whose outcome is already journaled, once
// the write holding it (nil: none, it was read from the journal) is
// durable.
func (h *Host) deduplicated(d *delivery, w *ticket) {
	h.m.deduplicated.Add(1)
	switch {
	case w == nil:
		h.afterFlush(d)(nil)
		return
	case w.durable():
		h.afterFlush(d)(w.err())
		return
	}
	go func() {
		<-w.done()
		h.afterFlush(d)(w.err())
	}()
}

// deadLetter journals the decision durably, stores the envelope, then
// journals the dead-letter outcome; the delivery is acked once that is
// durable. A crash or a lost write anywhere in between leaves the decision
// in the journal, so the redelivery finishes the dead letter (the store
// keeps one per message ID) and never runs the handler again.
func (h *Host) deadLetter(a *actor, d *delivery, attempts int, cause error, reason string) {
	cs := d.claim
	p := a.progress(d.id)
	if p.deadLetter == nil {
		decision := attemptData{N: attempts, Error: cause.Error(), At: time.Now().UTC(), DeadLetter: reason}
		g := h.append(a, cs, journal.KindAttempt, d.id, mustJSON(decision), false, nil)
		p.deadLetter = &decision
		if err := h.wait(cs, g); err != nil {
			h.deactivate(a)
			h.abandon(d)
			return
		}
	}
	if !h.putDeadLetter(a, d, attempts, cause, reason, p.errors) {
		return
	}
	data := mustJSON(deadLetterData{N: attempts, Reason: reason, Error: cause.Error(), At: time.Now()})
	h.journalOutcome(a, d, journal.KindDeadLetter, data, h.afterFlush(d))
	h.m.deadLettered.Add(1)
}

// putDeadLetter writes the envelope, retrying until it is stored or the
// claim ends (then the delivery is abandoned and false returned).
func (h *Host) putDeadLetter(a *actor, d *delivery, attempts int, cause error, reason string, history []attemptData) bool {
	cs := d.claim
	msg := d.msg
	env := dlq.Envelope{
		MessageID: msg.ID, Address: addressOf(msg), Payload: msg.Payload, Headers: msg.Headers,
		Source: dlq.Source{Backend: h.cfg.Consumer.Backend(), Mailbox: msg.Mailbox, Partition: msg.Partition,
			Offset: msg.Offset, Published: msg.PublishedAt},
		Attempts: attempts, Reason: reason, Worker: h.cfg.Worker, DeadLetteredAt: time.Now().UTC(),
	}
	for _, e := range history {
		env.Errors = append(env.Errors, dlq.AttemptError{Attempt: e.N, Error: e.Error, At: e.At})
	}
	if len(env.Errors) == 0 || env.Errors[len(env.Errors)-1].Error != cause.Error() {
		env.Errors = append(env.Errors, dlq.AttemptError{Attempt: attempts, Error: cause.Error(), At: time.Now().UTC()})
	}
	err := h.retry(cs, "writing dead letter", func() error { return h.cfg.DeadLetters.Put(cs.ctx, env) }, zap.String("actor", a.key))
	if err != nil {
		h.abandon(d)
		return false
	}
	h.log.Warn("message dead-lettered", zap.String("actor", a.key), zap.String("message", msg.ID),
		zap.String("reason", reason), zap.Int("attempts", attempts), zap.Error(cause))
	return true
}

// ensureActive activates a, retrying journal failures until the claim ends.
func (h *Host) ensureActive(a *actor, cs *claimState) error {
	if a.active {
		return nil
	}
	if a.lastWrite != nil {
		// Writes of an earlier activation must be readable first.
		if err := h.wait(cs, a.lastWrite); err != nil {
			return err
		}
	}
	return h.retry(cs, "activating actor", func() error { return h.activate(a, cs) }, zap.String("actor", a.key))
}

// lookupOutcome asks the journal whether msgID has an outcome, retrying
// journal failures until the claim ends: skipping the message instead would
// break the actor's order and stall the watermark.
func (h *Host) lookupOutcome(a *actor, cs *claimState, msgID string) (done bool, err error) {
	err = h.retry(cs, "outcome lookup", func() (err error) {
		_, done, err = h.cfg.Journal.Outcome(cs.ctx, a.key, msgID)
		return err
	}, zap.String("actor", a.key))
	return done, err
}

// retry runs fn, a journal or DLQ call, until it succeeds, backing off
// after failures, or returns ErrAbandoned once the claim stops or ends.
func (h *Host) retry(cs *claimState, what string, fn func() error, fields ...zap.Field) error {
	p := newPause(50 * time.Millisecond)
	for {
		err := fn()
		if err == nil {
			return nil
		}
		if errors.Is(err, ErrAbandoned) || cs.ctx.Err() != nil || cs.isStopping() {
			return ErrAbandoned
		}
		h.log.Warn(what+" failed; retrying", append(fields, zap.Error(err), zap.Duration("in", p.next()))...)
		if !p.wait(cs.stopping, cs.ctx.Done()) {
			return ErrAbandoned
		}
	}
}

// addressOf is msg's address as the DLQ shows it: empty when it has none.
func addressOf(msg channel.Message) string {
	if msg.Address == (channel.Address{}) {
		return ""
	}
	return msg.Address.String()
}

// backoff is the delay before retry number n (n >= 1): exponential, capped,
// with jitter over its upper half so retries of many actors spread out.
func (h *Host) backoff(n int) time.Duration {
	d := h.cfg.BackoffInitial
	for i := 1; i < n && d < h.cfg.BackoffMax; i++ {
		d *= 2
	}
	d = min(d, h.cfg.BackoffMax)
	half := d / 2
	return half + time.Duration(rand.Int64N(int64(half)+1))
}
