// Package dlq is the dead-letter contract: the envelope every backend
// stores for a message that could not be processed, with its full
// provenance, and the store that lists, shows, redrives and purges them.
package dlq

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"time"
)

// Envelope is one dead letter.
type Envelope struct {
	// ID identifies the dead letter in its store.
	ID string `json:"id"`

	MessageID string            `json:"message_id"`
	Address   string            `json:"address"`
	Payload   []byte            `json:"payload"`
	Headers   map[string]string `json:"headers,omitempty"`

	Source Source `json:"source"`

	Attempts int            `json:"attempts"`
	Errors   []AttemptError `json:"errors"`
	// Reason is why it was dead-lettered: "permanent error" or
	// "attempts exhausted".
	Reason string `json:"reason"`

	Worker         string    `json:"worker"`
	DeadLetteredAt time.Time `json:"dead_lettered_at"`
}

// Source is where the message was consumed from.
type Source struct {
	Backend   string    `json:"backend"`
	Mailbox   string    `json:"mailbox"`
	Partition int32     `json:"partition"`
	Offset    int64     `json:"offset"`
	Published time.Time `json:"published,omitempty"`
}

// AttemptError is the error of one failed attempt.
type AttemptError struct {
	Attempt int       `json:"attempt"`
	Error   string    `json:"error"`
	At      time.Time `json:"at"`
}

// LastError returns the newest attempt error, or "".
func (e Envelope) LastError() string {
	if len(e.Errors) == 0 {
		return ""
	}
	return e.Errors[len(e.Errors)-1].Error
}

// Writer stores dead letters. Put returns once the envelope is durable;
// putting the same MessageID twice keeps one dead letter.
type Writer interface {
	Put(ctx context.Context, env Envelope) error
}

// Store is the operator's view of a dead-letter queue.
type Store interface {
	Writer
	// List returns every dead letter, oldest DeadLetteredAt first.
	List(ctx context.Context) ([]Envelope, error)
	// Get returns the dead letter with ID id, or an error matching
	// ErrNotFound.
	Get(ctx context.Context, id string) (Envelope, error)
	// Redrive publishes the given dead letters, or all of them when ids is
	// empty, back to their mailbox, in their original order per actor
	// (CompareRedrive's order), removes them from the queue and returns
	// how many it redrove. A redriven message gets the ID
	// RedriveID(original) and keeps the original in the header
	// HeaderRedriveOf, so it is processed afresh rather than deduped
	// against its dead-letter outcome; it goes to exactly the address bytes
	// the dead letter holds (the home partition of them), with its payload
	// and headers (see RedriveMessage). An unknown ID fails the whole call
	// with an error matching ErrNotFound before anything is published, and
	// so does a dead letter that cannot be redriven as it is, with an error
	// naming it and matching channel.ErrBadAddress or
	// channel.ErrBadMessageID; it stays queued.
	Redrive(ctx context.Context, ids ...string) (int, error)
	// Purge removes the given dead letters, or all of them when ids is
	// empty, and returns how many it removed. Unknown IDs are skipped.
	Purge(ctx context.Context, ids ...string) (int, error)
}

// HeaderRedriveOf carries, on a redriven message, the ID it was redriven from.
const HeaderRedriveOf = "postbox-redrive-of"

// RedriveID is the message ID a redriven copy of id gets. Redriving the
// same message again yields a new ID each time (id.r1, id.r2, …).
func RedriveID(id string) string {
	base, n := id, 0
	if i := strings.LastIndex(id, ".r"); i >= 0 {
		if k, err := strconv.Atoi(id[i+2:]); err == nil && k > 0 {
			base, n = id[:i], k
		}
	}
	return base + ".r" + strconv.Itoa(n+1)
}

// ErrNotFound is returned for an unknown dead-letter ID.
var ErrNotFound = errors.New("dlq: no such dead letter")
