package dlq

import (
	"cmp"
	"fmt"
	"maps"
	"strings"

	"github.com/postbox-dev/postbox/channel"
)

// RedriveMessage is the copy of env that Store.Redrive publishes: ID
// RedriveID(env.MessageID), the address bytes env holds, its payload, and
// its headers plus HeaderRedriveOf. A dead letter that cannot be redriven
// as it is (its address is not "type/id", or the copy's address or ID
// breaks the identifier limits every publisher enforces) gets an error
// that names it, says what to do, and matches channel.ErrBadAddress or
// channel.ErrBadMessageID. It is checked here, one dead letter at a time,
// because a publisher refuses a whole batch without saying which dead
// letter is to blame; stores still publish through the publisher's checks.
func RedriveMessage(env Envelope) (channel.Message, error) {
	refused := func(err error) (channel.Message, error) { return channel.Message{}, CannotRedrive(env, err) }
	addr, err := channel.ParseAddress(env.Address)
	if err != nil {
		return refused(err)
	}
	if err := channel.CheckAddress(addr); err != nil {
		return refused(err)
	}
	m := channel.Message{ID: RedriveID(env.MessageID), Address: addr, Payload: env.Payload}
	if err := channel.CheckMessageID(m.ID); err != nil {
		return refused(err)
	}
	m.Headers = maps.Clone(env.Headers)
	if m.Headers == nil {
		m.Headers = make(map[string]string, 1)
	}
	m.Headers[HeaderRedriveOf] = env.MessageID
	return m, nil
}

// CannotRedrive is the error of a Redrive refused because of env: it names
// the dead letter, wraps why (err), and says what to do. Stores use it
// when their publisher's checks refuse the copy RedriveMessage made.
func CannotRedrive(env Envelope, err error) error {
	return fmt.Errorf("dead letter %s (message %+q to %+q) cannot be redriven: %w; nothing was redriven: purge it, or fix it and publish it again by hand",
		env.ID, env.MessageID, env.Address, err)
}

// NotFoundForRedrive is the error of a Redrive given the unknown dead-letter
// ID id: it matches ErrNotFound.
func NotFoundForRedrive(id string) error {
	return fmt.Errorf("dead letter %s: %w (nothing was redriven; list them to see the IDs)", id, ErrNotFound)
}

// CompareRedrive orders dead letters the way every Store.Redrive publishes
// them: by address, then source partition and offset, then when they were
// dead-lettered. One actor's messages so go back in their original order.
func CompareRedrive(a, b *Envelope) int {
	return cmp.Or(
		strings.Compare(a.Address, b.Address),
		cmp.Compare(a.Source.Partition, b.Source.Partition),
		cmp.Compare(a.Source.Offset, b.Source.Offset),
		a.DeadLetteredAt.Compare(b.DeadLetteredAt),
	)
}
