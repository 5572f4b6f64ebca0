package kafka

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"slices"
	"sync"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/postbox-dev/postbox/channel"
)

// Publisher publishes messages to one topic with an idempotent producer
// that waits for all in-sync replicas (acks=all). The record key is the
// address and the header HeaderID carries the message ID.
type Publisher struct {
	topic   string
	brokers []string
	cl      *kgo.Client

	lifecycle // held for reading by Publish
}

var _ channel.Publisher = (*Publisher)(nil)

// OpenPublisher returns a Publisher to topic on the given brokers
// ("host:port"). It does not connect until the first Publish; the topic must
// exist by then (see EnsureTopics).
func OpenPublisher(brokers []string, topic string, opts Options) (*Publisher, error) {
	opts = opts.WithDefaults()
	if err := opts.validate(brokers, topic); err != nil {
		return nil, err
	}
	cl, err := kgo.NewClient(opts.producerOpts(brokers,
		kgo.DefaultProduceTopic(topic),
		kgo.RecordPartitioner(HomePartitioner()),
	)...)
	if err != nil {
		return nil, fmt.Errorf("kafka: publisher to %s: %w", topic, err)
	}
	return &Publisher{topic: topic, brokers: brokers, cl: cl}, nil
}

// Publish implements channel.Publisher, writing assigned IDs back into
// msgs. On an error other than a bad address or ID, some messages may have
// been written and others not; publishing them again is safe, as the host
// dedups by ID.
func (p *Publisher) Publish(ctx context.Context, msgs ...channel.Message) error {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.closed {
		return channel.ErrClosed
	}
	if err := channel.CheckPublish(msgs); err != nil {
		return fmt.Errorf("kafka: %w", err)
	}
	recs := make([]*kgo.Record, len(msgs))
	for i := range msgs {
		m := &msgs[i]
		if m.ID == "" {
			m.ID = channel.NewMessageID()
		}
		recs[i] = record(*m)
	}
	if len(recs) == 0 {
		return nil
	}
	if err := p.cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		if errors.Is(err, kerr.UnknownTopicOrPartition) {
			return fmt.Errorf("kafka: publish to %s: %w (create the topic first, for example with EnsureTopics)", p.topic, err)
		}
		if _, ok := errors.AsType[*net.OpError](err); ok {
			return fmt.Errorf("kafka: publish to %s: %w%s", p.topic, err, unreachableHint(p.brokers))
		}
		return fmt.Errorf("kafka: publish to %s: %w", p.topic, err)
	}
	return nil
}

// record builds the record for m: key = address, HeaderID = ID, then m's
// headers in key order, but for the ones this package sets.
func record(m channel.Message) *kgo.Record {
	hs := make([]kgo.RecordHeader, 1, len(m.Headers)+1)
	hs[0] = kgo.RecordHeader{Key: HeaderID, Value: []byte(m.ID)}
	for _, k := range slices.Sorted(maps.Keys(m.Headers)) {
		if !ownHeader(k) {
			hs = append(hs, kgo.RecordHeader{Key: k, Value: []byte(m.Headers[k])})
		}
	}
	return &kgo.Record{Key: []byte(m.Address.String()), Value: m.Payload, Headers: hs}
}

// Close waits for Publish calls in flight, then closes the connections.
// Later calls return channel.ErrClosed. Close is idempotent.
func (p *Publisher) Close() error { return p.close(p.cl.Close) }

// lifecycle is the closing of a type that holds clients: its calls hold mu
// for reading and fail once closed is set; Close holds it for writing.
type lifecycle struct {
	mu     sync.RWMutex
	closed bool
}

// close runs fn, closing the clients, the first time it is called, once
// the calls in flight have returned.
func (l *lifecycle) close(fn func()) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.closed {
		l.closed = true
		fn()
	}
	return nil
}
