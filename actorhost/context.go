package actorhost

import (
	"context"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"time"

	"github.com/postbox-dev/postbox/channel"
	"go.uber.org/zap"
)

// Context is a handler's view of the message being handled. It is valid
// only during the handler call.
type Context struct {
	context.Context

	address   channel.Address
	msgID     string
	attempt   int
	now       time.Time
	logger    *zap.Logger // built on first use from baseLog
	baseLog   *zap.Logger
	replaying bool
	rng       *rand.Rand

	// effects holds results already journaled for this message, by index.
	effects  map[int]effectRecord
	next     int
	executed int // effects run for real during this call
	answered int // effects answered from the journal
	// record journals a new effect result and waits until it is durable.
	record func(idx int, name string, result []byte) error
}

type effectRecord struct {
	name   string
	result []byte
}

// Address is the actor's address.
func (c *Context) Address() channel.Address { return c.address }

// MessageID is the ID of the message being handled.
func (c *Context) MessageID() string { return c.msgID }

// Attempt is 1 on the first attempt at this message, and counts up across
// retries and redeliveries.
func (c *Context) Attempt() int { return c.attempt }

// Now is the time of this attempt, the same again on replay.
func (c *Context) Now() time.Time { return c.now }

// Rand is a source seeded from the message ID, the same again on replay.
func (c *Context) Rand() *rand.Rand {
	if c.rng == nil {
		h := fnv.New64a()
		h.Write([]byte(c.msgID))
		s := h.Sum64()
		c.rng = rand.New(rand.NewPCG(s, s^0x9e3779b97f4a7c15))
	}
	return c.rng
}

// Logger logs with the actor, message and attempt as fields. On replay it
// discards.
func (c *Context) Logger() *zap.Logger {
	if c.logger == nil {
		if c.replaying || c.baseLog == nil {
			c.logger = zap.NewNop()
		} else {
			c.logger = c.baseLog.With(zap.Stringer("actor", c.address), zap.String("message", c.msgID), zap.Int("attempt", c.attempt))
		}
	}
	return c.logger
}

// Replaying reports whether the handler is being re-run from the journal.
func (c *Context) Replaying() bool { return c.replaying }

// EffectKey is the idempotency key of the index-th side effect of a
// message: the same on every attempt and every redelivery.
func EffectKey(msgID string, index int) string { return fmt.Sprintf("%s#%d", msgID, index) }

// SideEffect runs fn at most once per message and effect position, as far
// as the journal can tell: if the journal holds the result of this
// message's n-th side effect (from an earlier attempt, or on replay), that
// result is returned and fn is not called. Otherwise fn runs with the
// effect's idempotency key, and its result is journaled durably before
// SideEffect returns. fn runs again only if the process dies (or the
// partition is fenced) between fn returning and that write; it then gets the
// same key, so downstream systems can dedup. An error from fn is returned
// and not journaled: the next attempt runs fn again.
func (c *Context) SideEffect(name string, fn func(ctx context.Context, key string) ([]byte, error)) ([]byte, error) {
	idx := c.next
	c.next++
	if rec, ok := c.effects[idx]; ok {
		if rec.name != name {
			return nil, fmt.Errorf("%w: effect %d of message %s is %q in the journal, the handler asked for %q",
				ErrNondeterminism, idx, c.msgID, rec.name, name)
		}
		c.answered++
		return rec.result, nil
	}
	if c.replaying {
		return nil, fmt.Errorf("%w: effect %d (%q) of completed message %s is missing from the journal",
			ErrNondeterminism, idx, name, c.msgID)
	}
	result, err := fn(c.Context, EffectKey(c.msgID, idx))
	if err != nil {
		return nil, err
	}
	c.executed++
	if err := c.record(idx, name, result); err != nil {
		return nil, err
	}
	if c.effects == nil {
		c.effects = map[int]effectRecord{}
	}
	c.effects[idx] = effectRecord{name: name, result: result}
	return result, nil
}

// Effect is SideEffect for a result of type T, stored as JSON.
func Effect[T any](c *Context, name string, fn func(ctx context.Context, key string) (T, error)) (T, error) {
	var zero T
	raw, err := c.SideEffect(name, func(ctx context.Context, key string) ([]byte, error) {
		v, err := fn(ctx, key)
		if err != nil {
			return nil, err
		}
		return json.Marshal(v)
	})
	if err != nil {
		return zero, err
	}
	var v T
	if len(raw) == 0 {
		return zero, nil
	}
	if err := json.Unmarshal(raw, &v); err != nil {
		return zero, fmt.Errorf("actorhost: effect %q result: %w", name, err)
	}
	return v, nil
}
