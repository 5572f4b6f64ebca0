// Package ident holds the one set of limits on actor addresses and message
// IDs that every postbox backend accepts. Package channel exports them to
// users (channel.MaxIdentifierLen, channel.CheckAddress,
// channel.CheckMessageID); package journal applies them to what it stores.
//
// An address "type/id" and a message ID are each 1 to MaxLen bytes of
// valid UTF-8 without control characters (U+0000–U+001F, U+007F–U+009F).
// The type of an address is non-empty and has no "/"; its id is non-empty
// and may contain "/". Why these limits:
//   - every store can hold them: a Kafka key, a Redis field, SQLite text and
//     PostgreSQL text (which refuses NUL and invalid UTF-8) alike, so that a
//     value one backend took is never refused by another later;
//   - tools print one record per line: no newline or terminal escape can
//     hide in an identifier.
//
// The errors name the value (quoted with %q, cut short when long), say what
// is wrong and how to fix it. They carry no sentinel: callers wrap them in
// their own (channel.ErrBadAddress, journal.ErrInvalid, …).
package ident

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// MaxLen is the most bytes an address or a message ID may have.
const MaxLen = 1024

// quoteMax is how many bytes of a bad value an error quotes.
const quoteMax = 64

// CheckAddress checks the address typ + "/" + id. It allocates only to
// report an error.
func CheckAddress(typ, id string) error {
	addr := func() string { return typ + "/" + id }
	switch {
	case typ == "":
		return fmt.Errorf("address %s has an empty type: want TYPE/ID such as counter/7", quote(addr()))
	case id == "":
		return fmt.Errorf("address %s has an empty id: want TYPE/ID such as counter/7", quote(addr()))
	case strings.Contains(typ, "/"):
		return fmt.Errorf("address type %s contains \"/\": only the id may, as in TYPE/ID such as counter/7", quote(typ))
	case len(typ)+1+len(id) > MaxLen:
		return check("address", addr())
	}
	if i, _ := firstBad(typ); i >= 0 {
		return check("address", addr())
	}
	if i, _ := firstBad(id); i >= 0 {
		return check("address", addr())
	}
	return nil
}

// CheckMessageID checks a message ID.
func CheckMessageID(id string) error {
	if id == "" {
		return errors.New("message ID is empty: give every message a unique ID")
	}
	return check("message ID", id)
}

// CheckActorKey checks the actor key of a journal entry or checkpoint: an
// address "type/id", or a key of the host's own that starts with "$" (such
// as "$unaddressed:mailbox/3"), which only has to keep the length, UTF-8 and
// control-character limits.
func CheckActorKey(key string) error {
	if strings.HasPrefix(key, "$") {
		return check("actor key", key)
	}
	typ, id, ok := strings.Cut(key, "/")
	if !ok {
		return fmt.Errorf("actor %s has no \"/\": want TYPE/ID such as counter/7", quote(key))
	}
	return CheckAddress(typ, id)
}

// CheckPartitionKey checks the partition key of a journal batch (such as
// "kafka:orders/3"): the length, UTF-8 and control-character limits, so
// that every journal can store it as text.
func CheckPartitionKey(key string) error { return check("partition key", key) }

// check applies the limits every identifier shares; what names the
// identifier in the error.
func check(what, s string) error {
	if len(s) > MaxLen {
		return fmt.Errorf("%s %s is %d bytes; the limit is %d: shorten it (a hash of a long natural key works)", what, quote(s), len(s), MaxLen)
	}
	if s == "" {
		return fmt.Errorf("%s is empty", what)
	}
	switch i, r := firstBad(s); {
	case i < 0:
		return nil
	case r == utf8.RuneError:
		return fmt.Errorf("%s %s is not valid UTF-8 (byte %d): encode it as UTF-8", what, quote(s), i)
	default:
		return fmt.Errorf("%s %s has control character %U at byte %d: use printable characters only (encode binary values, for example as hex)", what, quote(s), r, i)
	}
}

// firstBad returns the byte index of the first invalid UTF-8 (with r
// utf8.RuneError) or control character (r) in s, or -1.
func firstBad(s string) (int, rune) {
	// ASCII first, byte by byte: most identifiers are.
	start := 0
	for ; start < len(s); start++ {
		c := s[start]
		if c >= utf8.RuneSelf {
			break
		}
		if c < 0x20 || c == 0x7f {
			return start, rune(c)
		}
	}
	for i, r := range s[start:] {
		i += start
		switch {
		case r == utf8.RuneError && !validAt(s, i):
			return i, r
		case r < 0x20 || (r >= 0x7f && r <= 0x9f):
			return i, r
		}
	}
	return -1, 0
}

// validAt reports whether the U+FFFD that range decoded at s[i] was really
// in s, rather than standing for an invalid byte.
func validAt(s string, i int) bool {
	_, n := utf8.DecodeRuneInString(s[i:])
	return n == 3
}

// quote quotes s for an error message, its first quoteMax bytes only when
// it is longer.
func quote(s string) string {
	if len(s) <= quoteMax {
		return fmt.Sprintf("%q", s)
	}
	n := quoteMax
	for n > 0 && !utf8.RuneStart(s[n]) {
		n-- // cut before a character, not inside one
	}
	return fmt.Sprintf("%q…", s[:n])
}
