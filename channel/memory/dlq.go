package memory

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"

	"github.com/postbox-dev/postbox/channel"
	"github.com/postbox-dev/postbox/dlq"
)

// DeadLetters is a Mailbox's dead-letter queue, in memory like the rest.
// Envelopes are copied in and out, byte for byte.
type DeadLetters struct {
	m *Mailbox
}

var _ dlq.Store = (*DeadLetters)(nil)

// deadLetters is the queue's state, guarded by the mailbox's mu.
type deadLetters struct {
	seq     int             // dead letters ever stored: numbers the next one
	letters []*dlq.Envelope // in the order first put
}

// Put stores a copy of env. A second Put with the same MessageID replaces
// the envelope and keeps the first one's ID. An empty ID gets "dl-N", N
// counting the mailbox's dead letters from 1, and a zero DeadLetteredAt the
// current time.
func (d *DeadLetters) Put(_ context.Context, env dlq.Envelope) error {
	env, err := dlq.ForPut(env)
	if err != nil {
		return fmt.Errorf("memory: %w", err)
	}
	q, err := d.lock("put dead letter of message " + env.MessageID)
	if err != nil {
		return err
	}
	defer d.m.mu.Unlock()
	env = copyEnvelope(env)
	for _, dl := range q.letters {
		if dl.MessageID == env.MessageID {
			env.ID = dl.ID
			*dl = env
			return nil
		}
	}
	if env.ID != "" && q.find(env.ID) != nil {
		return fmt.Errorf("memory: put dead letter of message %s: ID %s is taken by another dead letter: leave ID empty to get a fresh one", env.MessageID, env.ID)
	}
	q.seq++
	if env.ID == "" {
		env.ID = "dl-" + strconv.Itoa(q.seq)
	}
	q.letters = append(q.letters, &env)
	return nil
}

// List implements dlq.Store.List.
func (d *DeadLetters) List(context.Context) ([]dlq.Envelope, error) {
	q, err := d.lock("list dead letters")
	if err != nil {
		return nil, err
	}
	defer d.m.mu.Unlock()
	return dlq.OldestFirst(q.letters, func(dl *dlq.Envelope) dlq.Envelope { return copyEnvelope(*dl) }), nil
}

// Get implements dlq.Store.Get.
func (d *DeadLetters) Get(_ context.Context, id string) (dlq.Envelope, error) {
	q, err := d.lock("get dead letter " + id)
	if err != nil {
		return dlq.Envelope{}, err
	}
	defer d.m.mu.Unlock()
	dl := q.find(id)
	if dl == nil {
		return dlq.Envelope{}, fmt.Errorf("memory: %w", dlq.NotFoundForGet(id))
	}
	return copyEnvelope(*dl), nil
}

// Redrive implements dlq.Store.Redrive: all of the dead letters go back
// into the mailbox, or none.
func (d *DeadLetters) Redrive(_ context.Context, ids ...string) (int, error) {
	q, err := d.lock("redrive dead letters")
	if err != nil {
		return 0, err
	}
	defer d.m.mu.Unlock()
	picked, err := dlq.Pick(ids, true,
		func() ([]*dlq.Envelope, error) { return slices.Clone(q.letters), nil },
		func(id string) (*dlq.Envelope, bool, error) { dl := q.find(id); return dl, dl != nil, nil })
	if err != nil {
		return 0, fmt.Errorf("memory: redrive: %w", err)
	}
	msgs, err := dlq.RedriveMessages(picked, func(dl *dlq.Envelope) dlq.Envelope { return *dl },
		func(msgs []channel.Message) ([]channel.Message, error) { return msgs, channel.CheckMessage(msgs[0]) })
	if err != nil {
		return 0, fmt.Errorf("memory: redrive: %w", err)
	}
	d.m.appendLocked(msgs)
	q.letters = slices.DeleteFunc(q.letters, func(dl *dlq.Envelope) bool { return slices.Contains(picked, dl) })
	return len(picked), nil
}

// Purge implements dlq.Store.Purge.
func (d *DeadLetters) Purge(_ context.Context, ids ...string) (int, error) {
	q, err := d.lock("purge dead letters")
	if err != nil {
		return 0, err
	}
	defer d.m.mu.Unlock()
	before := len(q.letters)
	q.letters = slices.DeleteFunc(q.letters, func(dl *dlq.Envelope) bool { return len(ids) == 0 || slices.Contains(ids, dl.ID) })
	return before - len(q.letters), nil
}

// lock locks the mailbox and returns its queue, or, unlocked again, an
// error naming op if the mailbox is closed.
func (d *DeadLetters) lock(op string) (*deadLetters, error) {
	d.m.mu.Lock()
	if d.m.closed {
		d.m.mu.Unlock()
		return nil, fmt.Errorf("memory: %s: %w", op, channel.ErrClosed)
	}
	return &d.m.dead, nil
}

func (q *deadLetters) find(id string) *dlq.Envelope {
	for _, dl := range q.letters {
		if dl.ID == id {
			return dl
		}
	}
	return nil
}

// copyEnvelope copies env deeply, so that neither the caller nor the queue
// sees the other's later changes.
func copyEnvelope(env dlq.Envelope) dlq.Envelope {
	env.Payload = bytes.Clone(env.Payload)
	env.Headers = maps.Clone(env.Headers)
	env.Errors = slices.Clone(env.Errors)
	return env
}
