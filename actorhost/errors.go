package actorhost

import (
	"errors"
	"fmt"
)

// Permanent marks err as not worth retrying: the host dead-letters the
// message at once. Permanent(nil) is nil.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &permanentError{err: err}
}

type permanentError struct{ err error }

func (e *permanentError) Error() string { return "permanent: " + e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

// IsPermanent reports whether err, or an error it wraps, came from Permanent.
func IsPermanent(err error) bool {
	var p *permanentError
	return errors.As(err, &p)
}

// PanicError is what a recovered handler panic becomes. It is retryable.
type PanicError struct {
	Value any
	Stack []byte
}

func (e *PanicError) Error() string { return fmt.Sprintf("handler panicked: %v", e.Value) }

var (
	// ErrUnknownActorType is returned when a message's address names a type
	// no handler is registered for. Such messages are dead-lettered.
	ErrUnknownActorType = errors.New("actorhost: no handler registered for actor type")
	// ErrNondeterminism means a handler, run again on replay, asked for a
	// side effect the journal does not hold: the handler code changed or
	// depends on something outside its context.
	ErrNondeterminism = errors.New("actorhost: handler is not deterministic on replay")
	// ErrAbandoned is returned from SideEffect when the host gave up the
	// message (stopping, or the partition was fenced or lost). The handler
	// should return it; the message is delivered again later.
	ErrAbandoned = errors.New("actorhost: message abandoned")
	// ErrBroken means an actor's journal cannot be replayed the same way
	// twice: a checkpoint that no longer decodes, a corrupt entry, a
	// handler that fails or diverges on replay, entries compacted away.
	// The host dead-letters such an actor's messages with the reason
	// (redrive them once the cause is fixed); Replay returns it.
	ErrBroken = errors.New("actorhost: actor's journal does not replay")
)
