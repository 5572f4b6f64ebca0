package channel

import (
	"errors"
	"fmt"

	"github.com/postbox-dev/postbox/internal/ident"
)

// MaxIdentifierLen is the most bytes an address ("type/id", slash
// included) or a message ID may have: 1024.
//
// The limits on identifiers, the same for every backend: an address and a
// message ID are each 1 to MaxIdentifierLen bytes of valid UTF-8 with no
// control characters (U+0000–U+001F, U+007F–U+009F); an address's type is
// non-empty and has no "/", its id is non-empty and may have "/". Every
// mailbox and journal backend can store such values as they are (PostgreSQL
// text, for one, refuses NUL bytes and invalid UTF-8), and command-line
// tools print one record per line. Publishers refuse anything else before
// writing, and journals refuse it with journal.ErrInvalid.
const MaxIdentifierLen = ident.MaxLen

// ErrBadMessageID is returned for a message ID that breaks the limits of
// MaxIdentifierLen, for instance by Publish before it writes anything.
var ErrBadMessageID = errors.New("bad message ID")

// CheckAddress reports whether a is an address every backend can store:
// "type/id" within the limits of MaxIdentifierLen. Its error matches
// ErrBadAddress and says what is wrong, for example
// `address "counter/\xff" is not valid UTF-8 (byte 8): encode it as UTF-8`.
func CheckAddress(a Address) error {
	if err := ident.CheckAddress(a.Type, a.ID); err != nil {
		return &badIdentifier{kind: ErrBadAddress, err: err}
	}
	return nil
}

// CheckMessageID reports whether id is a message ID every backend can
// store: within the limits of MaxIdentifierLen, and not empty. Its error
// matches ErrBadMessageID and says what is wrong, for example
// `message ID "…"… is 70000 bytes; the limit is 1024: shorten it …`.
// (Publish takes an empty ID as "assign one"; it checks only IDs given.)
func CheckMessageID(id string) error {
	if err := ident.CheckMessageID(id); err != nil {
		return &badIdentifier{kind: ErrBadMessageID, err: err}
	}
	return nil
}

// CheckMessage checks what Publish takes of msg: its address with
// CheckAddress, and its ID with CheckMessageID unless it is empty (Publish
// assigns one then).
func CheckMessage(msg Message) error {
	if err := CheckAddress(msg.Address); err != nil {
		return err
	}
	if msg.ID != "" {
		return CheckMessageID(msg.ID)
	}
	return nil
}

// CheckPublish checks a batch with CheckMessage, as Publish must before it
// writes any of it. Its error names the message's index in msgs.
func CheckPublish(msgs []Message) error {
	for i, msg := range msgs {
		if err := CheckMessage(msg); err != nil {
			return fmt.Errorf("publish message %d: %w", i, err)
		}
	}
	return nil
}

// badIdentifier reads as its reason alone, which already names the
// identifier, and matches its sentinel with errors.Is.
type badIdentifier struct {
	kind, err error
}

func (e *badIdentifier) Error() string   { return e.err.Error() }
func (e *badIdentifier) Unwrap() []error { return []error{e.kind, e.err} }
