package redis

import (
	"context"
	"errors"
	"fmt"

	"github.com/redis/go-redis/v9"

	"github.com/postbox-dev/postbox/channel"
	"github.com/postbox-dev/postbox/channel/internal/lease"
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

func (d *DeadLetters) keys() []string { return []string{d.m.dlqKey(), d.m.dlqIndexKey()} }

// Put stores env, durably once it returns (with appendfsync always). Its
// ID is dlq.IDOf(env.MessageID) (env.ID is ignored), so a second Put
// of the same message replaces the first and keeps its ID. A zero
// DeadLetteredAt is set to now.
func (d *DeadLetters) Put(ctx context.Context, env dlq.Envelope) error {
	if d.m.isClosed() {
		return fmt.Errorf("redis: put dead letter: %w", channel.ErrClosed)
	}
	env, err := dlq.ForPut(env)
	if err != nil {
		return fmt.Errorf("redis: %w", err)
	}
	env.ID = dlq.IDOf(env.MessageID)
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

func (l letter) envelope() dlq.Envelope { return l.env }

// List implements dlq.Store.List.
func (d *DeadLetters) List(ctx context.Context) ([]dlq.Envelope, error) {
	if d.m.isClosed() {
		return nil, fmt.Errorf("redis: list dead letters: %w", channel.ErrClosed)
	}
	letters, err := d.readAll(ctx, d.m.client)
	if err != nil {
		return nil, fmt.Errorf("redis: list dead letters: %w", d.m.failed(err))
	}
	return dlq.OldestFirst(letters, letter.envelope), nil
}

// Get implements dlq.Store.Get.
func (d *DeadLetters) Get(ctx context.Context, id string) (dlq.Envelope, error) {
	if d.m.isClosed() {
		return dlq.Envelope{}, fmt.Errorf("redis: get dead letter %s: %w", id, channel.ErrClosed)
	}
	l, ok, err := d.get(ctx, d.m.client, id)
	switch {
	case err != nil:
		return dlq.Envelope{}, fmt.Errorf("redis: get dead letter %s: %w", id, d.m.failed(err))
	case !ok:
		return dlq.Envelope{}, fmt.Errorf("redis: %w", dlq.NotFoundForGet(id))
	}
	return l.env, nil
}

// Redrive implements dlq.Store.Redrive in one MULTI/EXEC transaction:
// either all of the dead letters are redriven or none. When dead letters
// are put or removed meanwhile, Redrive starts over (WATCH).
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
	letters, err := dlq.Pick(ids, true,
		func() ([]letter, error) { return d.readAll(ctx, tx) },
		func(id string) (letter, bool, error) { return d.get(ctx, tx, id) })
	if err != nil || len(letters) == 0 {
		return 0, err
	}
	recs, err := dlq.RedriveMessages(letters, letter.envelope,
		func(msgs []channel.Message) ([]lease.Record, error) {
			return lease.Records(Backend, d.m.partitions, msgs)
		})
	if err != nil {
		return 0, err
	}
	_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
		d.m.xadd(ctx, p, recs)
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

// Purge implements dlq.Store.Purge.
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

// readAll reads every dead letter, in the order of their entries.
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
	return letters, nil
}

// get reads the dead letter with ID id, false if there is none.
func (d *DeadLetters) get(ctx context.Context, c redis.Cmdable, id string) (letter, bool, error) {
	entry, err := c.HGet(ctx, d.m.dlqIndexKey(), id).Result()
	if errors.Is(err, redis.Nil) {
		return letter{}, false, nil
	}
	if err != nil {
		return letter{}, false, err
	}
	page, err := c.XRange(ctx, d.m.dlqKey(), entry, entry).Result()
	if err != nil || len(page) == 0 { // an entry gone: a Purge or Redrive in between
		return letter{}, false, err
	}
	l, err := decodeLetter(page[0])
	return l, err == nil, err
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
