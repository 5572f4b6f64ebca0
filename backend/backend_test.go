package backend_test

import (
	"context"
	"errors"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/postbox-dev/postbox/backend"
	"github.com/postbox-dev/postbox/channel"
	"github.com/postbox-dev/postbox/internal/testenv"
	"github.com/postbox-dev/postbox/journal"
)

func TestBadURLsSayWhatToUse(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	mailboxes := map[string]string{
		"bogus://x/y":                     "unknown form",
		"memory:":                         "journal only",
		"sqlite:":                         "missing path",
		"sqlite:" + dir:                   "is a directory",
		"sqlite:" + dir + "/no/such/x.db": "does not exist",
		"kafka:nope":                      "missing //",
		"kafka://h:1":                     "missing topic",
		"kafka://nohost/t":                "not HOST:PORT",
		"redis://h:1":                     "redis://HOST:PORT/MAILBOX",
		"redis://h:1/{bad}":               "without braces",
	}
	for url, want := range mailboxes {
		_, err := backend.OpenMailbox(ctx, url, backend.MailboxOptions{})
		var u *backend.URLError
		if !errors.As(err, &u) || u.Role != "mailbox" || u.URL != url || !strings.Contains(u.Why, want) {
			t.Errorf("OpenMailbox(%q): %v; want a mailbox URLError saying %q", url, err, want)
		}
	}
	journals := map[string]string{
		"bogus:":                  "unknown form",
		"memory:x":                "takes no path",
		"redis://h:1":             "redis://HOST:PORT/NAMESPACE",
		"sqlite:" + dir + "/j.db": "does not exist", // with MustExist
	}
	for url, want := range journals {
		_, err := backend.OpenJournal(ctx, url, backend.JournalOptions{MustExist: true})
		var u *backend.URLError
		if !errors.As(err, &u) || u.Role != "journal" || !strings.Contains(u.Why, want) {
			t.Errorf("OpenJournal(%q): %v; want a journal URLError saying %q", url, err, want)
		}
	}
	// A password never shows in an error.
	_, err := backend.OpenJournal(ctx, "postgresx://u:secret@h:1/db", backend.JournalOptions{})
	if err == nil || strings.Contains(err.Error(), "secret") {
		t.Errorf("OpenJournal with a password in an unknown form: %v", err)
	}
}

// Two spellings of one SQLite file name the same mailbox, so their hosts
// fence each other.
func TestMailboxNameComesFromTheStore(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "box.db")
	ctx := context.Background()
	a, err := backend.OpenMailbox(ctx, "sqlite:"+path, backend.MailboxOptions{Partitions: 3})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := backend.OpenMailbox(ctx, "sqlite://"+filepath.Join(dir, ".", "box.db"), backend.MailboxOptions{MustExist: true})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if a.Name != b.Name || a.Partitions != 3 || b.Partitions != 3 || a.Backend != "sqlite" {
		t.Errorf("mailboxes %q (%d partitions, %s) and %q (%d): want one name, 3 partitions", a.Name, a.Partitions, a.Backend, b.Name, b.Partitions)
	}
}

// Every URL form opens what it names, and a message goes through it.
func TestEveryFormOpens(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dir := t.TempDir()
	suffix := strconv.FormatInt(time.Now().UnixNano(), 36)
	t.Run("sqlite", func(t *testing.T) {
		roundTrip(t, ctx, "sqlite:"+filepath.Join(dir, "m.db"), "sqlite:"+filepath.Join(dir, "j.db"), backend.MailboxOptions{})
	})
	t.Run("redis", func(t *testing.T) {
		addr := testenv.Redis(t)
		roundTrip(t, ctx, "redis://"+addr+"/bk-"+suffix, "redis://"+addr+"/bkj-"+suffix, backend.MailboxOptions{})
	})
	t.Run("kafka+postgres", func(t *testing.T) {
		brokers := testenv.Kafka(t)
		dsn := testenv.Postgres(t)
		roundTrip(t, ctx, "kafka://"+strings.Join(brokers, ",")+"/bk-"+suffix, dsn,
			backend.MailboxOptions{CreateTopics: true, Partitions: 2})
	})
	t.Run("memory journal", func(t *testing.T) {
		j, err := backend.OpenJournal(ctx, "memory:", backend.JournalOptions{})
		if err != nil {
			t.Fatal(err)
		}
		j.Close()
	})
}

func roundTrip(t *testing.T, ctx context.Context, mailboxURL, journalURL string, opts backend.MailboxOptions) {
	t.Helper()
	mb, err := backend.OpenMailbox(ctx, mailboxURL, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer mb.Close()
	j, err := backend.OpenJournal(ctx, journalURL, backend.JournalOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	// An actor of its own: a shared PostgreSQL journal outlives the test.
	actor := channel.Address{Type: "t", ID: strconv.FormatInt(time.Now().UnixNano(), 36)}
	msg := channel.Message{ID: "m1", Address: actor, Payload: []byte("p")}
	if err := mb.Publisher.Publish(ctx, msg); err != nil {
		t.Fatal(err)
	}
	c := mb.NewConsumer()
	runCtx, stop := context.WithCancel(ctx)
	got := make(chan channel.Message, 1)
	done := make(chan error, 1)
	go func() {
		done <- c.Run(runCtx, func(cl channel.Claim) {
			for m := range cl.Messages() {
				select {
				case got <- m:
				default:
				}
			}
			cl.Release(context.Background())
		})
	}()
	select {
	case m := <-got:
		if m.ID != "m1" || string(m.Payload) != "p" || m.Mailbox == "" {
			t.Errorf("consumed %+v", m)
		}
	case <-ctx.Done():
		t.Fatal("no message consumed from", mailboxURL)
	}
	stop()
	if err := <-done; err != nil {
		t.Errorf("Run: %v", err)
	}
	err = j.Append(ctx, journal.Batch{Partition: mb.Name + "/0", Entries: []journal.Entry{{Actor: actor.String(), Seq: 1, Kind: journal.KindComplete, MsgID: "m1", Data: []byte{}}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok, err := j.Outcome(ctx, actor.String(), "m1"); err != nil || !ok {
		t.Errorf("outcome after append: %v, %v", ok, err)
	}
	if name := mb.NewConsumer().Mailbox(); name != mb.Name {
		t.Errorf("the consumer names the mailbox %q, the Mailbox %q: hosts would key the journal differently", name, mb.Name)
	}
	if mb.Name == "" || mb.Partitions < 1 || mb.DLQ == nil {
		t.Errorf("mailbox %+v", mb)
	}
}
