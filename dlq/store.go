package dlq

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/postbox-dev/postbox/channel"
)

// The helpers below are the parts of a Store that do not depend on where
// it keeps its dead letters. Every backend's store is built on them, so
// that Put, List, Get and Redrive mean the same everywhere.

// ForPut checks env for Store.Put and fills in what Put fills in: a zero
// DeadLetteredAt becomes now. An envelope without a MessageID is refused:
// it could neither be redriven nor deduplicated.
func ForPut(env Envelope) (Envelope, error) {
	if env.MessageID == "" {
		return env, errors.New("put dead letter: empty MessageID: set it to the ID of the message being dead-lettered")
	}
	if env.DeadLetteredAt.IsZero() {
		env.DeadLetteredAt = time.Now().UTC()
	}
	return env, nil
}

// IDOf is the dead-letter ID derived from a message ID: "dl-" and a hash
// of it. A store without an index of its own from message ID to dead
// letter keys by it, so that putting a message twice keeps one dead letter
// under one ID.
func IDOf(messageID string) string {
	sum := sha256.Sum256([]byte(messageID))
	return "dl-" + hex.EncodeToString(sum[:16])
}

// OldestFirst returns the envelopes of letters (env gives one) in
// Store.List's order: by DeadLetteredAt, keeping the order of letters
// among those dead-lettered at the same time.
func OldestFirst[L any](letters []L, env func(L) Envelope) []Envelope {
	envs := make([]Envelope, len(letters))
	for i, l := range letters {
		envs[i] = env(l)
	}
	slices.SortStableFunc(envs, func(a, b Envelope) int { return a.DeadLetteredAt.Compare(b.DeadLetteredAt) })
	return envs
}

// NotFoundForGet is the error of a Get given the unknown dead-letter ID
// id: it matches ErrNotFound.
func NotFoundForGet(id string) error {
	return fmt.Errorf("get dead letter %s: %w (list them to see the IDs)", id, ErrNotFound)
}

// Pick returns the dead letters named by ids, each once, in the order they
// are first named, or all of them (all) when ids is empty. find looks one
// up by ID, false when there is none. An unknown ID fails the call with
// NotFoundForRedrive when strict, as Redrive wants, and is skipped when
// not, as Purge wants.
func Pick[L any](ids []string, strict bool, all func() ([]L, error), find func(id string) (L, bool, error)) ([]L, error) {
	if len(ids) == 0 {
		return all()
	}
	var picked []L
	seen := make(map[string]bool, len(ids))
	for _, id := range ids {
		if seen[id] {
			continue
		}
		seen[id] = true
		l, ok, err := find(id)
		switch {
		case err != nil:
			return nil, err
		case ok:
			picked = append(picked, l)
		case strict:
			return nil, NotFoundForRedrive(id)
		}
	}
	return picked, nil
}

// RedriveMessages sorts letters in the order Store.Redrive publishes them
// (CompareRedrive) and returns the copy of each (RedriveMessage) as
// prepare, the store's own publishing, makes it ready to write: its
// checks, the partition and the encoding. env gives a letter's envelope.
// prepare is called once per dead letter, with a batch of one, so that a
// refusal names its dead letter (CannotRedrive); the first refusal fails
// the call, before anything is written.
func RedriveMessages[L, P any](letters []L, env func(L) Envelope, prepare func([]channel.Message) ([]P, error)) ([]P, error) {
	slices.SortStableFunc(letters, func(a, b L) int {
		ea, eb := env(a), env(b)
		return CompareRedrive(&ea, &eb)
	})
	out := make([]P, 0, len(letters))
	for _, l := range letters {
		e := env(l)
		m, err := RedriveMessage(e)
		if err != nil {
			return nil, err
		}
		p, err := prepare([]channel.Message{m})
		if err != nil {
			return nil, CannotRedrive(e, err)
		}
		out = append(out, p...)
	}
	return out, nil
}
