package actorhost

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"

	"github.com/postbox-dev/postbox/channel"
)

// identityError says why msg cannot be journaled under its own address and
// ID, with the dead-letter reason; nil when it can. The channel checks the
// same limits on publish, but other clients (kcat, XADD) do not.
func identityError(msg channel.Message) (reason string, err error) {
	if msg.Address == (channel.Address{}) {
		// The channel could not read an address (a Kafka key that is not
		// TYPE/ID); it keeps what it found in a header.
		return "no actor address", errors.New("the message has no actor address (TYPE/ID)")
	}
	if err := channel.CheckAddress(msg.Address); err != nil {
		return "invalid address", err
	}
	if err := channel.CheckMessageID(msg.ID); err != nil {
		return "invalid message ID", err
	}
	return "", nil
}

// unaddressedActor is the journal key under which a partition's messages
// without a valid address or ID get their dead-letter outcomes, so that a
// redelivery of one is deduplicated like any other message. Addresses
// never start with "$", so it cannot collide with an actor.
func unaddressedActor(partition string) string { return "$unaddressed:" + partition }

// journalID is the message ID a journal can store for id: id itself when it
// is within the limits, otherwise a digest of it, stable across
// redeliveries.
func journalID(id string) string {
	if channel.CheckMessageID(id) == nil {
		return id
	}
	sum := sha256.Sum256([]byte(id))
	return "sha256:" + hex.EncodeToString(sum[:])
}

// unhandled stands in for a handler where none may run: messages of an
// unknown type, or without a valid address or ID. Its actors only collect
// dead-letter outcomes, and checkpoint and deduplicate like any other.
type unhandled struct{}

type nothing struct{}

func (unhandled) newState() any { return &nothing{} }

// handle runs only when replaying completions of a type no longer
// registered: the actor is then broken, and says why.
func (unhandled) handle(*Context, any, Message) error { return ErrUnknownActorType }

func (unhandled) encode(any) ([]byte, error) { return []byte("{}"), nil }
func (unhandled) decode([]byte) (any, error) { return &nothing{}, nil }
func (unhandled) view(any) ([]byte, error)   { return []byte("{}"), nil }
