// Package backends turns --mailbox and --journal URLs into concrete
// backends. Only cmd/ and tests use it: the rest of postbox sees contracts.
package backends

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	neturl "net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

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

// UsageError is bad input from the command line: the message names the
// flag and what it accepts. Commands exit with status 2 on it.
type UsageError struct{ Msg string }

func (e *UsageError) Error() string { return e.Msg }

// IsUsage reports whether err is (or wraps) a *UsageError.
func IsUsage(err error) bool {
	var u *UsageError
	return errors.As(err, &u)
}

func usagef(format string, args ...any) error {
	return &UsageError{Msg: fmt.Sprintf(format, args...)}
}

// Mailbox is an opened mailbox: publish to it, consume it, inspect its DLQ.
type Mailbox struct {
	// Name identifies the mailbox in journal partition keys.
	Name        string
	Backend     string
	Partitions  int
	Publisher   channel.Publisher
	NewConsumer func() channel.Consumer
	DLQ         dlq.Store
	close       func() error
}

// Close closes the mailbox.
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
	// LeaseTTL is how long a SQLite partition lease lasts without renewal:
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
	Logger *slog.Logger
}

// OpenMailbox opens the mailbox a --mailbox URL names.
func OpenMailbox(url string, opts MailboxOptions) (*Mailbox, error) {
	scheme, rest := splitURL(url)
	switch scheme {
	case "sqlite":
		path, err := sqlitePath("--mailbox", url, rest, opts.MustExist)
		if err != nil {
			return nil, err
		}
		mb, err := chsqlite.Open(path, chsqlite.Options{Partitions: opts.Partitions, Synchronous: chsqlite.Synchronous(strings.ToUpper(opts.Synchronous))})
		if err != nil {
			return nil, fmt.Errorf("--mailbox %s: %w", url, err)
		}
		return &Mailbox{
			Name: "sqlite:" + filepath.Base(path), Backend: "sqlite", Partitions: mb.Partitions(),
			Publisher:   mb.Publisher(),
			NewConsumer: func() channel.Consumer { return mb.Consumer(chsqlite.ConsumerOptions{LeaseTTL: opts.LeaseTTL}) },
			DLQ:         mb.DLQ(),
			close:       mb.Close,
		}, nil
	case "kafka":
		return openKafka(url, rest, opts)
	case "redis":
		return openRedis(url, rest, opts)
	case "memory":
		return nil, usagef("--mailbox %q: memory: is accepted for --journal only (a mailbox must outlive the worker); use %s", url, MailboxForms)
	}
	return nil, usagef("--mailbox %q: unknown form; use %s", url, MailboxForms)
}

// JournalOptions tune how a journal is opened.
type JournalOptions struct {
	Synchronous     string
	KeepCheckpoints int
	Compact         bool
	MustExist       bool
}

// OpenJournal opens the journal a --journal URL names.
func OpenJournal(url string, opts JournalOptions) (journal.Journal, error) {
	scheme, rest := splitURL(url)
	switch scheme {
	case "sqlite":
		path, err := sqlitePath("--journal", url, rest, opts.MustExist)
		if err != nil {
			return nil, err
		}
		j, err := jsqlite.Open(path, jsqlite.Options{
			Synchronous:     jsqlite.Synchronous(strings.ToUpper(opts.Synchronous)),
			KeepCheckpoints: opts.KeepCheckpoints, Compact: opts.Compact,
		})
		if err != nil {
			return nil, fmt.Errorf("--journal %s: %w", url, err)
		}
		return j, nil
	case "memory":
		if rest != "" {
			return nil, usagef("--journal %q: memory: takes no path; use %s", url, JournalForms)
		}
		return memory.New(memory.Options{}), nil
	case "postgres", "postgresql":
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		j, err := postgres.Open(ctx, url, postgres.Options{KeepCheckpoints: opts.KeepCheckpoints, Compact: opts.Compact})
		if err != nil {
			return nil, fmt.Errorf("--journal %s: %w", redactDSN(url), err)
		}
		return j, nil
	case "redis":
		addr, ns, ok := strings.Cut(strings.TrimPrefix(rest, "//"), "/")
		if !strings.HasPrefix(rest, "//") || addr == "" || !ok || ns == "" || strings.ContainsAny(ns, "{}/") {
			return nil, usagef("--journal %q: want redis://HOST:PORT/NAMESPACE (a namespace without braces or slashes)", url)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		j, err := jredis.Open(ctx, addr, jredis.Options{Namespace: ns, KeepCheckpoints: opts.KeepCheckpoints, Compact: opts.Compact})
		if err != nil {
			return nil, fmt.Errorf("--journal %s: %w", url, err)
		}
		return j, nil
	}
	return nil, usagef("--journal %q: unknown form; use %s", url, JournalForms)
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
func sqlitePath(flag, url, path string, mustExist bool) (string, error) {
	path = strings.TrimPrefix(path, "//")
	if path == "" {
		return "", usagef("%s %q: missing path; use sqlite:PATH, e.g. sqlite:postbox.db", flag, url)
	}
	info, err := os.Stat(path)
	switch {
	case err == nil && info.IsDir():
		return "", usagef("%s %q: %s is a directory; use sqlite:PATH to a database file", flag, url, path)
	case err == nil:
		f, err := os.OpenFile(path, os.O_RDWR, 0)
		if err != nil {
			return "", usagef("%s %q: cannot open %s for reading and writing: %v", flag, url, path, err)
		}
		f.Close()
	case errors.Is(err, os.ErrNotExist):
		if mustExist {
			return "", usagef("%s %q: %s does not exist; point it at the database the worker uses", flag, url, path)
		}
		dir := filepath.Dir(path)
		if st, err := os.Stat(dir); err != nil || !st.IsDir() {
			return "", usagef("%s %q: directory %s does not exist; create it or use another path", flag, url, dir)
		}
	default:
		return "", usagef("%s %q: cannot read %s: %v", flag, url, path, err)
	}
	return path, nil
}

// redactDSN hides a password in a postgres:// URL for error messages.
func redactDSN(dsn string) string {
	u, err := neturl.Parse(dsn)
	if err != nil {
		return "postgres://…"
	}
	return u.Redacted()
}
