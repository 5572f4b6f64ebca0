package lease

import (
	"context"
	"fmt"
	"sync"
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

// Records checks msgs as one publish and returns what a mailbox stores of
// them: new IDs for empty ones, empty payloads for nil ones.
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

// Runs tracks the consumer runs of one mailbox, so that closing the
// mailbox stops them and waits for them. The zero value is ready.
type Runs struct {
	mu      sync.Mutex
	closed  bool
	closing chan struct{}
	wg      sync.WaitGroup
}

// Attach registers a Run (it is Config.Attach): closing is closed when the
// mailbox is being closed, and Close waits for detach. It fails with
// channel.ErrClosed once the mailbox is closed.
func (r *Runs) Attach() (closing <-chan struct{}, detach func(), err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil, nil, channel.ErrClosed
	}
	r.init()
	r.wg.Add(1)
	return r.closing, r.wg.Done, nil
}

// Close stops the attached runs and waits for them to detach. Only the
// first call does so and returns true: the caller then closes the rest.
func (r *Runs) Close() bool {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return false
	}
	r.closed = true
	r.init()
	close(r.closing)
	r.mu.Unlock()
	r.wg.Wait()
	return true
}

// Closed reports whether Close was called.
func (r *Runs) Closed() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.closed
}

func (r *Runs) init() {
	if r.closing == nil {
		r.closing = make(chan struct{})
	}
}
