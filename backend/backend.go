// Package backend opens a mailbox or a journal from a URL, the forms the
// command line takes, and returns the contracts: a publisher, a consumer
// factory and a dead-letter store for a mailbox (see channel and dlq), a
// journal.Journal for a journal. A program that only publishes uses
// OpenMailbox(...).Publisher; a worker uses all of it.
//
//	mailbox: sqlite:PATH, kafka://HOST:PORT[,HOST:PORT]/TOPIC, redis://HOST:PORT/MAILBOX
//	journal: sqlite:PATH, postgres://USER@HOST:PORT/DB?…, redis://HOST:PORT/NAMESPACE, memory:
//
// A URL that is not one of these gets a *URLError that says what is
// accepted; a backend that cannot be reached, an error that wraps the
// backend's. Only programs pick backends: actorhost sees contracts.
package backend

import (
	"context"
	"errors"
	"fmt"
	neturl "net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap"

	"github.com/postbox-dev/postbox/channel"
	chsqlite "github.com/postbox-dev/postbox/channel/sqlite"
	"github.com/postbox-dev/postbox/dlq"
	"github.com/postbox-dev/postbox/journal"
	"github.com/postbox-dev/postbox/journal/memory"
	"github.com/postbox-dev/postbox/journal/postgres"
	jredis "github.com/postbox-dev/postbox/journal/redis"
	jsqlite "github.com/postbox-dev/postbox/journal/sqlite"
)

// DefaultURL is where the mailbox and the journal live unless told.
const DefaultURL = "sqlite:postbox.db"

// MailboxForms and JournalForms list the accepted URL forms, for errors
// and help text.
const (
	MailboxForms = "sqlite:PATH, kafka://HOST:PORT[,HOST:PORT]/TOPIC or redis://HOST:PORT/MAILBOX"
	JournalForms = "sqlite:PATH, postgres://USER@HOST:PORT/DB, redis://HOST:PORT/NAMESPACE or memory:"
)

// URLError is a mailbox or journal URL that cannot be used as given: not
// one of the accepted forms, or a SQLite path that cannot be opened. Why
// says what to do instead.
type URLError struct {
	Role string // "mailbox" or "journal"
	URL  string // as given, with any password hidden
	Why  string
}

func (e *URLError) Error() string { return fmt.Sprintf("%s URL %q: %s", e.Role, e.URL, e.Why) }

func badURL(role, url, format string, args ...any) error {
	return &URLError{Role: role, URL: url, Why: fmt.Sprintf(format, args...)}
}

// Mailbox is an opened mailbox: publish to it, consume it, inspect its DLQ.
type Mailbox struct {
	// Name identifies the mailbox: the same for every process that opens
	// it, whatever URL spelling they use for its store, so that hosts on
	// one mailbox fence each other (actorhost.Config.Mailbox).
	Name string
	// Backend is "sqlite", "kafka" or "redis".
	Backend string
	// Partitions is the mailbox's partition count.
	Partitions int
	// Publisher publishes to the mailbox. Close closes it.
	Publisher channel.Publisher
	// NewConsumer returns a new consumer of the mailbox, for one host.
	NewConsumer func() channel.Consumer
	// DLQ is the mailbox's dead-letter store.
	DLQ   dlq.Store
	close func() error
}

// Close closes the mailbox, its publisher and the consumers it made.
func (m *Mailbox) Close() error { return m.close() }

// MailboxOptions tune how a mailbox is opened.
type MailboxOptions struct {
	// Partitions is used when the mailbox is created. 0 keeps the backend's
	// default or what the mailbox already has.
	Partitions int
	// Synchronous is "FULL" (default) or "NORMAL" for SQLite.
	Synchronous string
	// MustExist refuses to create a new mailbox (for inspection commands).
	MustExist bool
	// LeaseTTL is how long a SQLite or Redis partition lease lasts without renewal:
	// how soon a dead worker's partitions move to another. 0: the default.
	LeaseTTL time.Duration
	// CreateTopics creates a Kafka mailbox's topic and its DLQ topic when
	// missing, with Partitions (0: 12) and Replication (0: 1).
	CreateTopics bool
	Replication  int
	// SessionTimeout is how long a Kafka consumer group waits for a worker
	// that stopped heartbeating before moving its partitions. 0: 45s.
	SessionTimeout time.Duration
	// Logger receives backend client warnings (Kafka). Nil discards them.
	Logger *zap.Logger
	// KafkaClientOptions go to every Kafka client (TLS, SASL): see
	// kafka.Options.ClientOptions.
	KafkaClientOptions []kgo.Opt
}

// OpenMailbox opens the mailbox url names, creating it if it does not
// exist (unless opts.MustExist). ctx bounds connecting to a server and
// creating topics.
func OpenMailbox(ctx context.Context, url string, opts MailboxOptions) (*Mailbox, error) {
	scheme, rest := splitURL(url)
	switch scheme {
	case "sqlite":
		path, err := sqlitePath("mailbox", url, rest, opts.MustExist)
		if err != nil {
			return nil, err
		}
		mb, err := chsqlite.Open(path, chsqlite.Options{Partitions: opts.Partitions, Synchronous: chsqlite.Synchronous(strings.ToUpper(opts.Synchronous))})
		if err != nil {
			return nil, fmt.Errorf("mailbox %s: %w", url, err)
		}
		return &Mailbox{
			Name: mb.Identity(), Backend: "sqlite", Partitions: mb.Partitions(),
			Publisher:   mb.Publisher(),
			NewConsumer: func() channel.Consumer { return mb.Consumer(chsqlite.ConsumerOptions{LeaseTTL: opts.LeaseTTL}) },
			DLQ:         mb.DLQ(),
			close:       mb.Close,
		}, nil
	case "kafka":
		return openKafka(ctx, url, rest, opts)
	case "redis":
		return openRedis(ctx, url, rest, opts)
	case "memory":
		return nil, badURL("mailbox", url, "memory: is accepted for a journal only (a mailbox must outlive the worker); use %s", MailboxForms)
	}
	return nil, badURL("mailbox", url, "unknown form; use %s", MailboxForms)
}

// JournalOptions tune how a journal is opened.
type JournalOptions struct {
	// Synchronous is "FULL" (default) or "NORMAL" for SQLite.
	Synchronous string
	// KeepCheckpoints is how many checkpoints are kept per actor (0: 3).
	KeepCheckpoints int
	// Compact deletes attempt and effect entries older than the oldest
	// kept checkpoint.
	Compact bool
	// MustExist refuses to create a new SQLite journal (for inspection).
	MustExist bool
}

// OpenJournal opens the journal url names, creating its schema if needed
// (unless opts.MustExist). ctx bounds connecting and migrating.
func OpenJournal(ctx context.Context, url string, opts JournalOptions) (journal.Journal, error) {
	scheme, rest := splitURL(url)
	switch scheme {
	case "sqlite":
		path, err := sqlitePath("journal", url, rest, opts.MustExist)
		if err != nil {
			return nil, err
		}
		j, err := jsqlite.Open(path, jsqlite.Options{
			Synchronous:     jsqlite.Synchronous(strings.ToUpper(opts.Synchronous)),
			KeepCheckpoints: opts.KeepCheckpoints, Compact: opts.Compact,
		})
		if err != nil {
			return nil, fmt.Errorf("journal %s: %w", url, err)
		}
		return j, nil
	case "memory":
		if rest != "" {
			return nil, badURL("journal", url, "memory: takes no path; use %s", JournalForms)
		}
		return memory.New(memory.Options{KeepCheckpoints: opts.KeepCheckpoints}), nil
	case "postgres", "postgresql":
		j, err := postgres.Open(ctx, url, postgres.Options{KeepCheckpoints: opts.KeepCheckpoints, Compact: opts.Compact})
		if err != nil {
			return nil, fmt.Errorf("journal %s: %w", Redact(url), err)
		}
		return j, nil
	case "redis":
		addr, ns, ok := strings.Cut(strings.TrimPrefix(rest, "//"), "/")
		if !strings.HasPrefix(rest, "//") || addr == "" || !ok || ns == "" || strings.ContainsAny(ns, "{}/") {
			return nil, badURL("journal", url, "want redis://HOST:PORT/NAMESPACE (a namespace without braces or slashes)")
		}
		j, err := jredis.Open(ctx, addr, jredis.Options{Namespace: ns, KeepCheckpoints: opts.KeepCheckpoints, Compact: opts.Compact})
		if err != nil {
			return nil, fmt.Errorf("journal %s: %w", url, err)
		}
		return j, nil
	}
	return nil, badURL("journal", Redact(url), "unknown form; use %s", JournalForms)
}

func splitURL(url string) (scheme, rest string) {
	scheme, rest, ok := strings.Cut(url, ":")
	if !ok {
		return "", url
	}
	return strings.ToLower(scheme), rest
}

// sqlitePath checks that PATH in sqlite:PATH can be opened, so that a typo
// gets a clear error instead of a new empty database somewhere.
func sqlitePath(role, url, path string, mustExist bool) (string, error) {
	path = strings.TrimPrefix(path, "//")
	if path == "" {
		return "", badURL(role, url, "missing path; use sqlite:PATH, e.g. sqlite:postbox.db")
	}
	info, err := os.Stat(path)
	switch {
	case err == nil && info.IsDir():
		return "", badURL(role, url, "%s is a directory; use sqlite:PATH to a database file", path)
	case err == nil:
		f, err := os.OpenFile(path, os.O_RDWR, 0)
		if err != nil {
			return "", badURL(role, url, "cannot open %s for reading and writing: %v", path, err)
		}
		f.Close()
	case errors.Is(err, os.ErrNotExist):
		if mustExist {
			return "", badURL(role, url, "%s does not exist; point it at the database the worker uses", path)
		}
		dir := filepath.Dir(path)
		if st, err := os.Stat(dir); err != nil || !st.IsDir() {
			return "", badURL(role, url, "directory %s does not exist; create it or use another path", dir)
		}
	default:
		return "", badURL(role, url, "cannot read %s: %v", path, err)
	}
	return path, nil
}

// Redact returns url with any password in it hidden, for logs and errors.
func Redact(url string) string {
	u, err := neturl.Parse(url)
	if err != nil {
		return "(a URL that does not parse)"
	}
	return u.Redacted()
}
