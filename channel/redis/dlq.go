package redis

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/postbox-dev/postbox/channel"
	"github.com/postbox-dev/postbox/dlq"
)

// DeadLetters is a mailbox's dead-letter queue: the stream
// {postbox:<mailbox>}:dlq, one entry per dead letter with the fields id
// (the dead letter's ID) and envelope (the dlq.Envelope in the byte-exact
// layout of its MarshalBinary; entries written as JSON by earlier versions
// are still read, with what JSON already replaced), and the hash
// {postbox:<mailbox>}:dlq:index from dead-letter ID to entry ID.
//
// A dead letter's ID is derived from its message ID ("dl-" and a hash of
// it), so the index is in effect one from message ID to entry: putting the
// same message twice replaces the entry and keeps one dead letter, with
// the same ID. A DeadLetters is safe for concurrent use.
type DeadLetters struct {
	m *Mailbox
}

var _ dlq.Store = (*DeadLetters)(nil)

// readPage is how many dead letters List reads per command.
const readPage = 512

// redriveAttempts bounds how often Redrive starts over when dead letters
// change under it.
const redriveAttempts = 10

// DeadLetterID is the ID of the dead letter of the message with ID
// messageID.
func DeadLetterID(messageID string) string {
	sum := sha256.Sum256([]byte(messageID))
	return "dl-" + hex.EncodeToString(sum[:16])
}

func (d *DeadLetters) keys() []string { return []string{d.m.dlqKey(), d.m.dlqIndexKey()} }

// Put stores env, durably once it returns (with appendfsync always). Its
// ID is DeadLetterID(env.MessageID) (env.ID is ignored), so a second Put
// of the same message replaces the first and keeps its ID. A zero
// DeadLetteredAt is set to now.
func (d *DeadLetters) Put(ctx context.Context, env dlq.Envelope) error {
	if d.m.isClosed() {
		return fmt.Errorf("redis: put dead letter: %w", channel.ErrClosed)
	}
	if env.MessageID == "" {
		return errors.New("redis: put dead letter: empty MessageID: set it to the ID of the message being dead-lettered")
	}
	env.ID = DeadLetterID(env.MessageID)
	if env.DeadLetteredAt.IsZero() {
		env.DeadLetteredAt = time.Now().UTC()
	}
	doc, err := env.MarshalBinary() // not JSON: it would replace invalid UTF-8
	if err != nil {
		return fmt.Errorf("redis: put dead letter of message %s: encode: %w", env.MessageID, err)
	}
	if err := dlqPutScript.Run(ctx, d.m.client, d.keys(), env.ID, doc).Err(); err != nil {
		return fmt.Errorf("redis: put dead letter of message %s: %w", env.MessageID, d.m.failed(err))
	}
	return nil
}

// letter is a dead letter as read, with its entry.
type letter struct {
	env   dlq.Envelope
	entry string
}

// List returns every dead letter, oldest (by DeadLetteredAt) first.
func (d *DeadLetters) List(ctx context.Context) ([]dlq.Envelope, error) {
	if d.m.isClosed() {
		return nil, fmt.Errorf("redis: list dead letters: %w", channel.ErrClosed)
	}
	letters, err := d.readAll(ctx, d.m.client)
	if err != nil {
		return nil, fmt.Errorf("redis: list dead letters: %w", d.m.failed(err))
	}
	envs := make([]dlq.Envelope, len(letters))
	for i, l := range letters {
		envs[i] = l.env
	}
	return envs, nil
}

// Get returns the dead letter with ID id, or an error matching
// dlq.ErrNotFound.
func (d *DeadLetters) Get(ctx context.Context, id string) (dlq.Envelope, error) {
	if d.m.isClosed() {
		return dlq.Envelope{}, fmt.Errorf("redis: get dead letter %s: %w", id, channel.ErrClosed)
	}
	l, err := d.get(ctx, d.m.client, id)
	if err != nil {
		return dlq.Envelope{}, fmt.Errorf("redis: get dead letter %s: %w", id, d.m.failed(err))
	}
	return l.env, nil
}

// Redrive moves the given dead letters, or all of them when ids is empty,
// back into the mailbox in one MULTI/EXEC transaction: either all are
// redriven or none. They are re-published in dlq.CompareRedrive's order,
// so one actor's messages keep their original order, each under
// the ID dlq.RedriveID(original) with the original ID in header
// dlq.HeaderRedriveOf and the original headers, to exactly the address
// bytes it holds. An unknown ID fails the whole call with an error matching
// dlq.ErrNotFound, and a dead letter that cannot be redriven as it is (see
// dlq.RedriveMessage) with an error naming it and matching
// channel.ErrBadAddress or channel.ErrBadMessageID; it stays queued. When
// dead letters are put or removed meanwhile, Redrive starts over (WATCH).
func (d *DeadLetters) Redrive(ctx context.Context, ids ...string) (int, error) {
	if d.m.isClosed() {
		return 0, fmt.Errorf("redis: redrive dead letters: %w", channel.ErrClosed)
	}
	var n int
	for range redriveAttempts {
		err := d.m.client.Watch(ctx, func(tx *redis.Tx) error {
			var err error
			n, err = d.redrive(ctx, tx, ids)
			return err
		}, d.keys()...)
		if errors.Is(err, redis.TxFailedErr) {
			continue
		}
		if err != nil {
			return 0, fmt.Errorf("redis: redrive dead letters: %w", d.m.failed(err))
		}
		return n, nil
	}
	return 0, fmt.Errorf("redis: redrive dead letters: they kept changing during %d attempts; try again", redriveAttempts)
}

// redrive is one attempt of Redrive, under WATCH.
func (d *DeadLetters) redrive(ctx context.Context, tx *redis.Tx, ids []string) (int, error) {
	var letters []letter
	if len(ids) == 0 {
		var err error
		if letters, err = d.readAll(ctx, tx); err != nil {
			return 0, err
		}
	} else {
		seen := make(map[string]bool, len(ids))
		for _, id := range ids {
			if seen[id] {
				continue
			}
			seen[id] = true
			l, err := d.get(ctx, tx, id)
			if err != nil {
				if errors.Is(err, dlq.ErrNotFound) {
					return 0, dlq.NotFoundForRedrive(id)
				}
				return 0, err
			}
			letters = append(letters, l)
		}
	}
	if len(letters) == 0 {
		return 0, nil
	}
	slices.SortStableFunc(letters, func(a, b letter) int { return dlq.CompareRedrive(&a.env, &b.env) })
	entries := make([]entry, 0, len(letters))
	for _, l := range letters {
		// One at a time, so that a refusal names its dead letter.
		e, err := redriveEntry(l.env, d.m.partitions)
		if err != nil {
			return 0, err
		}
		entries = append(entries, e)
	}
	_, err := tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
		for _, e := range entries {
			p.XAdd(ctx, &redis.XAddArgs{Stream: d.m.streamKey(e.partition), ID: "*", Values: e.values})
		}
		dead := make([]string, len(letters))
		ids := make([]string, len(letters))
		for i, l := range letters {
			dead[i], ids[i] = l.entry, l.env.ID
		}
		p.XDel(ctx, d.m.dlqKey(), dead...)
		p.HDel(ctx, d.m.dlqIndexKey(), ids...)
		return nil
	})
	if err != nil {
		return 0, err
	}
	return len(letters), nil
}

// redriveEntry is the mailbox stream entry of the redriven copy of env, prepared as
// Publish prepares one.
func redriveEntry(env dlq.Envelope, partitions int) (entry, error) {
	m, err := dlq.RedriveMessage(env)
	if err != nil {
		return entry{}, err
	}
	out, err := prepareEntries([]channel.Message{m}, partitions)
	if err != nil {
		return entry{}, dlq.CannotRedrive(env, err)
	}
	return out[0], nil
}

// Purge deletes the given dead letters, or all of them when ids is empty,
// and returns how many it deleted. Unknown IDs are skipped.
func (d *DeadLetters) Purge(ctx context.Context, ids ...string) (int, error) {
	if d.m.isClosed() {
		return 0, fmt.Errorf("redis: purge dead letters: %w", channel.ErrClosed)
	}
	args := make([]any, 0, len(ids))
	seen := make(map[string]bool, len(ids))
	for _, id := range ids {
		if !seen[id] {
			seen[id] = true
			args = append(args, id)
		}
	}
	n, err := dlqPurgeScript.Run(ctx, d.m.client, d.keys(), args...).Int()
	if err != nil {
		return 0, fmt.Errorf("redis: purge dead letters: %w", d.m.failed(err))
	}
	return n, nil
}

// readAll reads every dead letter, oldest (by DeadLetteredAt, then entry)
// first.
func (d *DeadLetters) readAll(ctx context.Context, c redis.Cmdable) ([]letter, error) {
	var letters []letter
	start := "-"
	for {
		page, err := c.XRangeN(ctx, d.m.dlqKey(), start, "+", readPage).Result()
		if err != nil {
			return nil, err
		}
		for _, e := range page {
			l, err := decodeLetter(e)
			if err != nil {
				return nil, err
			}
			letters = append(letters, l)
		}
		if len(page) < readPage {
			break
		}
		start = "(" + page[len(page)-1].ID
	}
	slices.SortStableFunc(letters, func(a, b letter) int { return a.env.DeadLetteredAt.Compare(b.env.DeadLetteredAt) })
	return letters, nil
}

// get reads the dead letter with ID id, or fails with dlq.ErrNotFound.
func (d *DeadLetters) get(ctx context.Context, c redis.Cmdable, id string) (letter, error) {
	entry, err := c.HGet(ctx, d.m.dlqIndexKey(), id).Result()
	if errors.Is(err, redis.Nil) {
		return letter{}, fmt.Errorf("%w (list them to see the IDs)", dlq.ErrNotFound)
	}
	if err != nil {
		return letter{}, err
	}
	page, err := c.XRange(ctx, d.m.dlqKey(), entry, entry).Result()
	if err != nil {
		return letter{}, err
	}
	if len(page) == 0 {
		return letter{}, fmt.Errorf("%w (its entry %s is gone)", dlq.ErrNotFound, entry)
	}
	return decodeLetter(page[0])
}

func decodeLetter(e redis.XMessage) (letter, error) {
	doc, _ := e.Values["envelope"].(string) // go-redis hands bulk strings over byte for byte
	var env dlq.Envelope
	if err := env.UnmarshalBinary([]byte(doc)); err != nil {
		return letter{}, fmt.Errorf("dead letter at entry %s: %w", e.ID, err)
	}
	if id, ok := e.Values["id"].(string); ok {
		env.ID = id
	}
	return letter{env: env, entry: e.ID}, nil
}
