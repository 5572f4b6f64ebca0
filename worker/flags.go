package worker

import (
	"context"
	"flag"
	"time"

	"github.com/postbox-dev/postbox/backend"
	"github.com/postbox-dev/postbox/journal"
)

// storeFlags are the flags every command has: where the mailbox and the
// journal live.
type storeFlags struct {
	mailbox, journal string
	synchronous      string
	leaseTTL         time.Duration
	createTopics     bool
	keepCheckpoints  int
	compact          bool
	replication      int
	sessionTimeout   time.Duration
}

func addStoreFlags(fs *flag.FlagSet) *storeFlags {
	s := &storeFlags{}
	fs.StringVar(&s.mailbox, "mailbox", backend.DefaultURL, "mailbox URL: "+backend.MailboxForms)
	fs.StringVar(&s.journal, "journal", backend.DefaultURL, "journal URL: "+backend.JournalForms)
	fs.StringVar(&s.synchronous, "synchronous", "FULL", "SQLite durability: FULL (survives power loss) or NORMAL")
	return s
}

// openTimeout bounds connecting to a store and creating topics.
const openTimeout = time.Minute

func (s *storeFlags) journalOptions(mustExist bool) backend.JournalOptions {
	return backend.JournalOptions{Synchronous: s.synchronous, MustExist: mustExist,
		KeepCheckpoints: s.keepCheckpoints, Compact: s.compact}
}

func (s *storeFlags) mailboxOptions(mustExist bool, partitions int) backend.MailboxOptions {
	return backend.MailboxOptions{Synchronous: s.synchronous, MustExist: mustExist,
		Partitions: partitions, LeaseTTL: s.leaseTTL, CreateTopics: s.createTopics, Replication: s.replication,
		SessionTimeout: s.sessionTimeout}
}

func (s *storeFlags) openJournal(mustExist bool) (journal.Journal, error) {
	ctx, cancel := context.WithTimeout(context.Background(), openTimeout)
	defer cancel()
	return backend.OpenJournal(ctx, s.journal, s.journalOptions(mustExist))
}

func (s *storeFlags) openMailbox(mustExist bool, partitions int) (*backend.Mailbox, error) {
	ctx, cancel := context.WithTimeout(context.Background(), openTimeout)
	defer cancel()
	return backend.OpenMailbox(ctx, s.mailbox, s.mailboxOptions(mustExist, partitions))
}
