// Package channel is the mailbox contract: publishing messages addressed to
// actors, and consuming them partition by partition.
//
// A channel delivers at least once. Within one partition, messages are
// delivered in the order they were published. Every message of an address
// lives in the address's home partition (see HomePartition), so one actor's
// messages arrive in order. Backends live in sub-packages (channel/sqlite,
// …) and all of them pass channel/channeltest.
package channel

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Address names one actor as "type/id", for example "counter/42".
type Address struct {
	Type string
	ID   string
}

// ParseAddress parses "type/id". Both parts must be non-empty and the type
// may not contain a slash; the id may. It checks only this shape:
// CheckAddress checks the limits every backend needs as well.
func ParseAddress(s string) (Address, error) {
	typ, id, ok := strings.Cut(s, "/")
	if !ok || typ == "" || id == "" {
		return Address{}, fmt.Errorf("%w: %q, want TYPE/ID such as counter/7", ErrBadAddress, s)
	}
	return Address{Type: typ, ID: id}, nil
}

// String returns "type/id".
func (a Address) String() string { return a.Type + "/" + a.ID }

// Message is one message addressed to an actor.
//
// On Publish, ID may be empty (the publisher then assigns a unique one) and
// the position fields are ignored. On delivery every field is set.
type Message struct {
	// ID is stable across redeliveries and unique per message. The host
	// dedups by it. It keeps the limits of MaxIdentifierLen, as Address does.
	ID      string
	Address Address
	Payload []byte
	Headers map[string]string

	// Mailbox names the source (table, topic or stream) for provenance.
	Mailbox   string
	Partition int32
	// Offset increases with publish order within a partition. A message
	// delivered again keeps its offset: the host tells a redelivery by it
	// (see journal.Journal.Horizon), so no channel counts deliveries.
	Offset int64
	// PublishedAt is when the message entered the mailbox.
	PublishedAt time.Time
}

// Publisher publishes messages to a mailbox.
//
// Publish returns only after every message is durably stored, each on the
// home partition of its address (HomePartition), in order per address, and
// assigns each message with an empty ID a unique one. If any message's
// address or ID breaks the limits of MaxIdentifierLen, Publish writes none
// of them and returns an error matching ErrBadAddress or ErrBadMessageID;
// after Close it returns ErrClosed. A Publisher is safe for concurrent use.
type Publisher interface {
	Publish(ctx context.Context, msgs ...Message) error
	Close() error
}

// Consumer hands out partitions of a mailbox as Claims.
//
// Run blocks until ctx is cancelled, Close is called or a fatal error
// occurs, calling onClaim in a fresh goroutine for every partition this
// consumer comes to own. Several consumers (in one process or several)
// share the partitions between them; a partition is claimed by at most one
// consumer at a time.
//
// Stopping is graceful: Run closes the Messages channel of every claim,
// keeps the partitions owned and acks flowing while the onClaim calls
// finish their work and Release (for as long as the backend's bound
// allows), and returns once they have. A claim left unreleased is released
// then. So onClaim must return after Messages is closed, and must not wait
// for Run to return. Run returns nil when stopped by ctx or Close, and
// ErrClosed when called after Close. A Consumer runs once; create
// another to run again. Close stops Run and waits for it, so it must not
// be called from onClaim; it is idempotent.
type Consumer interface {
	Run(ctx context.Context, onClaim func(Claim)) error
	// Backend names the kind of channel ("sqlite", "kafka", …) for provenance.
	Backend() string
	// Mailbox identifies the mailbox consumed: the same for every consumer
	// of it, in every process, and different for another mailbox. The
	// host keys journal partitions by it, so hosts of one mailbox fence
	// each other and mailboxes can share a journal.
	Mailbox() string
	Close() error
}

// Claim is one partition owned by one consumer for a while.
//
// Messages delivers the partition's messages in offset order and is closed
// when the claim is being given up: the consumer is stopping, or the
// partition is being rebalanced away. The owner then finishes or abandons
// in-flight work, acks what is done, and calls Release. Lost is closed if
// ownership ended without warning (a lease expired): the owner must stop and
// ack nothing more, as another consumer may already have the partition.
// Lost closes before Messages does, so an owner that finds Messages closed
// can tell a loss from a stop.
type Claim interface {
	Partition() int32
	Messages() <-chan Message
	Lost() <-chan struct{}
	// Ack acknowledges finished messages. The host passes them in offset
	// order, up to its watermark (the first message not finished), so an
	// ack also stands for every earlier message of the claim: a backend
	// that commits a position (Kafka) moves it to just past the last
	// acked, and computes no watermark of its own. Ack may buffer; acks are
	// durable at the latest when Release returns. An ack after Lost is
	// ignored.
	Ack(ctx context.Context, msgs ...Message) error
	// Release flushes buffered acks and gives up the partition. It is
	// idempotent.
	Release(ctx context.Context) error
}

// Errors a backend may return. Wrapped errors match with errors.Is.
var (
	// ErrBadAddress is returned for an address that is not "type/id", or
	// breaks the limits of MaxIdentifierLen (see CheckAddress), for instance
	// by Publish before it writes anything.
	ErrBadAddress = errors.New("bad actor address")
	// ErrClosed is returned by calls on a closed publisher or consumer.
	ErrClosed = errors.New("channel closed")
)
