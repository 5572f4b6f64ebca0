package redis

import (
	"context"
	"fmt"
	"sync/atomic"

	"github.com/redis/go-redis/v9"

	"github.com/postbox-dev/postbox/channel"
)

// Publisher appends messages to a Mailbox's partition streams. It is safe for
// concurrent use.
type Publisher struct {
	m      *Mailbox
	closed atomic.Bool
}

var _ channel.Publisher = (*Publisher)(nil)

// Publish implements channel.Publisher in one MULTI/EXEC transaction: all
// of msgs or none, in one round trip, on disk once Redis applied it with
// appendfsync always. The caller's slice is not modified.
func (p *Publisher) Publish(ctx context.Context, msgs ...channel.Message) error {
	if p.closed.Load() || p.m.isClosed() {
		return fmt.Errorf("redis: publish: %w", channel.ErrClosed)
	}
	if len(msgs) == 0 {
		return nil
	}
	entries, err := prepareEntries(msgs, p.m.partitions)
	if err != nil {
		return err
	}
	_, err = p.m.client.TxPipelined(ctx, func(tx redis.Pipeliner) error {
		for _, e := range entries {
			tx.XAdd(ctx, &redis.XAddArgs{Stream: p.m.streamKey(e.partition), ID: "*", Values: e.values})
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("redis: publish %d messages: %w", len(msgs), p.m.failed(err))
	}
	return nil
}

// Close makes later Publish calls fail with channel.ErrClosed. It does not
// close the Mailbox, and it is idempotent.
func (p *Publisher) Close() error {
	p.closed.Store(true)
	return nil
}
