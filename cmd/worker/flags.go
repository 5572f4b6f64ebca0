package main

import (
	"flag"
	"log/slog"
	"os"
	"time"

	"github.com/postbox-dev/postbox/internal/backends"
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
	fs.StringVar(&s.mailbox, "mailbox", backends.DefaultURL, "mailbox URL: "+backends.MailboxForms)
	fs.StringVar(&s.journal, "journal", backends.DefaultURL, "journal URL: "+backends.JournalForms)
	fs.StringVar(&s.synchronous, "synchronous", "FULL", "SQLite durability: FULL (survives power loss) or NORMAL")
	return s
}

func (s *storeFlags) openJournal(mustExist bool) (journal.Journal, error) {
	return backends.OpenJournal(s.journal, backends.JournalOptions{Synchronous: s.synchronous, MustExist: mustExist,
		KeepCheckpoints: s.keepCheckpoints, Compact: s.compact})
}

func (s *storeFlags) openMailbox(mustExist bool, partitions int) (*backends.Mailbox, error) {
	return backends.OpenMailbox(s.mailbox, backends.MailboxOptions{Synchronous: s.synchronous, MustExist: mustExist,
		Partitions: partitions, LeaseTTL: s.leaseTTL, CreateTopics: s.createTopics, Replication: s.replication,
		SessionTimeout: s.sessionTimeout,
		Logger:         slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))})
}
