package lease

import (
	"context"
	"fmt"
	"sync/atomic"

	"github.com/postbox-dev/postbox/channel"
)

// Record is a published message as a mailbox stores it.
type Record struct {
	Partition   int32 // the address's home partition
	ID, Address string
	Payload     []byte
	Headers     map[string]string
}

// Records checks msgs as one publish and returns what a mailbox of
// partitions stores of them: a new ID where a message has none, and an
// empty payload for a nil one. backend prefixes the error.
func Records(backend string, partitions int, msgs []channel.Message) ([]Record, error) {
	if err := channel.CheckPublish(msgs); err != nil {
		return nil, fmt.Errorf("%s: %w", backend, err)
	}
	out := make([]Record, len(msgs))
	for i, m := range msgs {
		if m.ID == "" {
			m.ID = channel.NewMessageID()
		}
		if m.Payload == nil {
			m.Payload = []byte{}
		}
		addr := m.Address.String()
		out[i] = Record{Partition: channel.HomePartition(addr, partitions), ID: m.ID, Address: addr, Payload: m.Payload, Headers: m.Headers}
	}
	return out, nil
}

// Publisher is a leased mailbox's channel.Publisher.
type Publisher struct {
	backend    string
	partitions int
	closed     atomic.Bool
	mailbox    func() (closed bool)
	store      func(context.Context, []Record) error
}

// NewPublisher returns a publisher of a mailbox of partitions: store
// writes the records of one Publish, all or none, and closed reports the
// mailbox closed.
func NewPublisher(backend string, partitions int, closed func() bool, store func(context.Context, []Record) error) *Publisher {
	return &Publisher{backend: backend, partitions: partitions, mailbox: closed, store: store}
}

// Publish implements channel.Publisher. The caller's slice is not
// modified.
func (p *Publisher) Publish(ctx context.Context, msgs ...channel.Message) error {
	if p.closed.Load() || p.mailbox() {
		return fmt.Errorf("%s: publish: %w", p.backend, channel.ErrClosed)
	}
	if len(msgs) == 0 {
		return nil
	}
	recs, err := Records(p.backend, p.partitions, msgs)
	if err != nil {
		return err
	}
	if err := p.store(ctx, recs); err != nil {
		return fmt.Errorf("%s: publish %d messages: %w", p.backend, len(msgs), err)
	}
	return nil
}

// Close makes later Publish calls fail with channel.ErrClosed. It does not
// close the mailbox, and it is idempotent.
func (p *Publisher) Close() error {
	p.closed.Store(true)
	return nil
}
