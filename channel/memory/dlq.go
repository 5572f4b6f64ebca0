package memory

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"time"

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
	seq     int           // dead letters ever stored: numbers the next one
	letters []*deadLetter // in the order first put
}

type deadLetter struct {
	seq int
	env dlq.Envelope
}

// Put stores a copy of env. A second Put with the same MessageID replaces
// the envelope and keeps the first one's ID. An empty ID gets "dl-N", N
// counting the mailbox's dead letters from 1, and a zero DeadLetteredAt the
// current time.
func (d *DeadLetters) Put(_ context.Context, env dlq.Envelope) error {
	if env.MessageID == "" {
		return errors.New("memory: put dead letter: empty MessageID: set it to the ID of the message being dead-lettered")
	}
	m := d.m
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return fmt.Errorf("memory: put dead letter of message %s: %w", env.MessageID, channel.ErrClosed)
	}
	env = copyEnvelope(env)
	if env.DeadLetteredAt.IsZero() {
		env.DeadLetteredAt = time.Now()
	}
	q := &m.dead
	for _, dl := range q.letters {
		if dl.env.MessageID == env.MessageID {
			env.ID = dl.env.ID
			dl.env = env
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
	q.letters = append(q.letters, &deadLetter{seq: q.seq, env: env})
	return nil
}

// List returns every dead letter, oldest DeadLetteredAt first.
func (d *DeadLetters) List(context.Context) ([]dlq.Envelope, error) {
	m := d.m
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, fmt.Errorf("memory: list dead letters: %w", channel.ErrClosed)
	}
	sorted := slices.Clone(m.dead.letters)
	slices.SortStableFunc(sorted, func(a, b *deadLetter) int {
		return cmp.Or(a.env.DeadLetteredAt.Compare(b.env.DeadLetteredAt), cmp.Compare(a.seq, b.seq))
	})
	envs := make([]dlq.Envelope, len(sorted))
	for i, dl := range sorted {
		envs[i] = copyEnvelope(dl.env)
	}
	return envs, nil
}

// Get returns the dead letter with ID id, or an error matching
// dlq.ErrNotFound.
func (d *DeadLetters) Get(_ context.Context, id string) (dlq.Envelope, error) {
	m := d.m
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return dlq.Envelope{}, fmt.Errorf("memory: get dead letter %s: %w", id, channel.ErrClosed)
	}
	dl := m.dead.find(id)
	if dl == nil {
		return dlq.Envelope{}, fmt.Errorf("memory: get dead letter %s: %w (list them to see the IDs)", id, dlq.ErrNotFound)
	}
	return copyEnvelope(dl.env), nil
}

// Redrive moves the given dead letters, or all of them when ids is empty,
// back into the mailbox: all of them or none. They are published in
// dlq.CompareRedrive's order, so one actor's messages keep their original
// order, each under the ID dlq.RedriveID(original) with the
// original ID in header dlq.HeaderRedriveOf, to exactly the address bytes
// it holds. An unknown ID fails the whole call with an error matching
// dlq.ErrNotFound, and a dead letter that cannot be redriven as it is (see
// dlq.RedriveMessage) with an error naming it and matching
// channel.ErrBadAddress or channel.ErrBadMessageID; it stays queued.
func (d *DeadLetters) Redrive(_ context.Context, ids ...string) (int, error) {
	m := d.m
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return 0, fmt.Errorf("memory: redrive dead letters: %w", channel.ErrClosed)
	}
	q := &m.dead
	var picked []*deadLetter
	if len(ids) == 0 {
		picked = slices.Clone(q.letters)
	}
	for _, id := range ids {
		dl := q.find(id)
		if dl == nil {
			return 0, fmt.Errorf("memory: redrive: %w", dlq.NotFoundForRedrive(id))
		}
		if !slices.Contains(picked, dl) {
			picked = append(picked, dl)
		}
	}
	slices.SortStableFunc(picked, func(a, b *deadLetter) int { return dlq.CompareRedrive(&a.env, &b.env) })
	msgs := make([]channel.Message, len(picked))
	for i, dl := range picked {
		// One at a time, so that a refusal names its dead letter.
		msg, err := dlq.RedriveMessage(dl.env)
		if err == nil {
			err = checkMessage(msg)
		}
		if err != nil {
			return 0, fmt.Errorf("memory: redrive: %w", err)
		}
		msgs[i] = msg
	}
	m.appendLocked(msgs)
	q.letters = slices.DeleteFunc(q.letters, func(dl *deadLetter) bool { return slices.Contains(picked, dl) })
	return len(picked), nil
}

// Purge removes the given dead letters, or all of them when ids is empty,
// and returns how many it removed. Unknown IDs are skipped.
func (d *DeadLetters) Purge(_ context.Context, ids ...string) (int, error) {
	m := d.m
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return 0, fmt.Errorf("memory: purge dead letters: %w", channel.ErrClosed)
	}
	q := &m.dead
	before := len(q.letters)
	if len(ids) == 0 {
		q.letters = nil
	} else {
		q.letters = slices.DeleteFunc(q.letters, func(dl *deadLetter) bool { return slices.Contains(ids, dl.env.ID) })
	}
	return before - len(q.letters), nil
}

func (q *deadLetters) find(id string) *deadLetter {
	for _, dl := range q.letters {
		if dl.env.ID == id {
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
