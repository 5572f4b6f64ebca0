package actorhost

import (
	"errors"

	"github.com/postbox-dev/postbox/journal"
)

// TEMPORARY until journal.IsPermanent lands.
func permanentJournalError(err error) bool {
	return errors.Is(err, journal.ErrSequence) || errors.Is(err, journal.ErrFenced)
}
