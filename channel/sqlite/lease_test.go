package sqlite_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/postbox-dev/postbox/channel"
	"github.com/postbox-dev/postbox/channel/internal/backendtest"
	"github.com/postbox-dev/postbox/channel/sqlite"
	"github.com/postbox-dev/postbox/internal/testenv"
	"github.com/postbox-dev/postbox/internal/waitfor"
)

func count(t *testing.T, db *sql.DB, q string, args ...any) int {
	t.Helper()
	var n int
	if err := db.QueryRow(q, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	return n
}

// expireLeases makes every lease look expired, as if its owner had been
// paused for longer than its TTL.
func expireLeases(t *testing.T, db *sql.DB) {
	t.Helper()
	if _, err := db.Exec(`UPDATE mailbox_leases SET expires_at = 1 WHERE expires_at > 0`); err != nil {
		t.Fatal(err)
	}
}

func publishN(t *testing.T, mb *sqlite.Mailbox, n int) {
	t.Helper()
	var msgs []channel.Message
	for i := range n {
		msgs = append(msgs, channel.Message{Address: channel.Address{Type: "t", ID: fmt.Sprint(i % 5)}, Payload: fmt.Appendf(nil, "%d", i)})
	}
	if err := mb.Publisher().Publish(t.Context(), msgs...); err != nil {
		t.Fatal(err)
	}
}

// A zombie whose lease was taken over cannot delete what the new owner
// took, even with acks it buffered before: they are fenced by its epoch.
func TestZombieAcksAreFenced(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mailbox.db")
	mb := open(t, path, sqlite.Options{Partitions: 1})
	db := testenv.SQLite(t, path)
	publishN(t, mb, 2)

	// A renews rarely and polls rarely, so its buffered ack stays buffered
	// and it does not notice the takeover on its own.
	za := backendtest.Record(t, open(t, path, sqlite.Options{}).Consumer(sqlite.ConsumerOptions{Owner: "A", LeaseTTL: time.Hour, PollInterval: time.Hour}), false)
	claimA := za.Claim(t)
	waitfor.Until(t, 30*time.Second, "A to receive both", func() bool { return len(za.Received()) == 2 })
	if err := claimA.Ack(t.Context(), za.Received()[0]); err != nil {
		t.Fatal(err)
	}

	expireLeases(t, db)
	b := backendtest.Record(t, open(t, path, sqlite.Options{}).Consumer(sqlite.ConsumerOptions{Owner: "B", LeaseTTL: time.Hour, PollInterval: 5 * time.Millisecond}), false)
	waitfor.Until(t, 30*time.Second, "B to receive both again", func() bool { return len(b.Received()) == 2 })
	// Both are redeliveries of what A got, the one A acked included: the
	// same messages at the same offsets.
	for i, m := range b.Received() {
		if was := za.Received()[i]; m.ID != was.ID || m.Offset != was.Offset {
			t.Errorf("B's message %d is %s at offset %d, want A's %s at offset %d again", i, m.ID, m.Offset, was.ID, was.Offset)
		}
	}

	// The zombie releases: its buffered ack must not delete B's message,
	// nor may it drop B's lease.
	if err := claimA.Release(t.Context()); err != nil {
		t.Fatalf("zombie release: %v", err)
	}
	// It learns there that the partition was taken: its claim ends lost.
	backendtest.Lost(t, claimA, time.Second, "the zombie's Lost after its Release")
	if n := count(t, db, `SELECT count(*) FROM mailbox_messages`); n != 2 {
		t.Errorf("%d messages left after the zombie's ack, want both (B has not acked)", n)
	}
	if n := count(t, db, `SELECT count(*) FROM mailbox_leases WHERE owner = 'B' AND expires_at > 1`); n != 1 {
		t.Errorf("B's lease is gone after the zombie's release")
	}

	claimB := b.Claim(t)
	if err := claimB.Ack(t.Context(), b.Received()...); err != nil {
		t.Fatal(err)
	}
	if err := claimB.Release(t.Context()); err != nil {
		t.Fatal(err)
	}
	if n := count(t, db, `SELECT count(*) FROM mailbox_messages`); n != 0 {
		t.Errorf("%d messages left after B acked and released, want 0", n)
	}
}

// A consumer that finds its lease taken closes Lost and Messages, and
// ignores acks from then on.
func TestLostLeaseClosesClaim(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mailbox.db")
	mb := open(t, path, sqlite.Options{Partitions: 1})
	db := testenv.SQLite(t, path)
	publishN(t, mb, 3)

	a := backendtest.Record(t, open(t, path, sqlite.Options{}).Consumer(sqlite.ConsumerOptions{Owner: "A", LeaseTTL: 300 * time.Millisecond}), false)
	cl := a.Claim(t)
	waitfor.Until(t, 30*time.Second, "A to receive", func() bool { return len(a.Received()) == 3 })
	// Steal the lease, as a consumer that saw it expired would.
	if _, err := db.Exec(`UPDATE mailbox_leases SET owner = 'thief', epoch = epoch + 1, expires_at = ?`, time.Now().Add(time.Hour).UnixNano()); err != nil {
		t.Fatal(err)
	}
	backendtest.Lost(t, cl, 30*time.Second, "Lost after the lease was taken")
	if err := cl.Ack(t.Context(), a.Received()...); err != nil {
		t.Errorf("ack after Lost: %v, want nil (ignored)", err)
	}
	if err := cl.Release(t.Context()); err != nil {
		t.Errorf("release after Lost: %v", err)
	}
	if n := count(t, db, `SELECT count(*) FROM mailbox_messages`); n != 3 {
		t.Errorf("%d messages left, want 3: acks after Lost must not delete", n)
	}
	if n := count(t, db, `SELECT count(*) FROM mailbox_leases WHERE owner = 'thief'`); n != 1 {
		t.Error("the thief's lease was dropped by the loser's Release")
	}
}

// Buffer bounds the delivered-but-unacked messages of a claim; acks make
// room for more.
func TestBufferAppliesBackpressure(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mailbox.db")
	mb := open(t, path, sqlite.Options{Partitions: 1})
	publishN(t, mb, 100)
	r := backendtest.Record(t, mb.Consumer(sqlite.ConsumerOptions{Buffer: 10, BatchSize: 4, PollInterval: time.Millisecond}), false)
	cl := r.Claim(t)
	waitfor.Until(t, 30*time.Second, "the first 10", func() bool { return len(r.Received()) >= 10 })
	// Give the poller time to overshoot, if it would.
	observe := time.NewTimer(200 * time.Millisecond)
	<-observe.C
	if n := len(r.Received()); n != 10 {
		t.Fatalf("%d delivered without acks, want Buffer = 10", n)
	}
	if err := cl.Ack(t.Context(), r.Received()[:5]...); err != nil {
		t.Fatal(err)
	}
	waitfor.Until(t, 30*time.Second, "5 more after 5 acks", func() bool { return len(r.Received()) >= 15 })
	observe.Reset(200 * time.Millisecond)
	<-observe.C
	if n := len(r.Received()); n != 15 {
		t.Fatalf("%d delivered with 5 acked, want 15", n)
	}
}

// After Mailbox.Close every part of it reports ErrClosed.
func TestMailboxCloseStopsEverything(t *testing.T) {
	mb, err := sqlite.Open(filepath.Join(t.TempDir(), "mailbox.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	pub := mb.Publisher()
	c := mb.Consumer(sqlite.ConsumerOptions{})
	done := make(chan error, 1)
	go func() {
		done <- c.Run(context.Background(), func(cl channel.Claim) {
			for range cl.Messages() {
			}
		})
	}()
	if err := mb.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil && !errors.Is(err, channel.ErrClosed) {
			t.Errorf("Run after Mailbox.Close: %v, want nil", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Run still running 30s after Mailbox.Close")
	}
	msg := channel.Message{Address: channel.Address{Type: "a", ID: "1"}}
	if err := pub.Publish(t.Context(), msg); !errors.Is(err, channel.ErrClosed) {
		t.Errorf("Publish after Mailbox.Close: %v, want ErrClosed", err)
	}
	if err := mb.Consumer(sqlite.ConsumerOptions{}).Run(t.Context(), func(channel.Claim) {}); !errors.Is(err, channel.ErrClosed) {
		t.Errorf("Run after Mailbox.Close: %v, want ErrClosed", err)
	}
	if _, err := mb.DLQ().List(t.Context()); !errors.Is(err, channel.ErrClosed) {
		t.Errorf("DLQ List after Mailbox.Close: %v, want ErrClosed", err)
	}
	if err := mb.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

// A file of an earlier version has mailbox_messages.deliveries, and
// mailbox_messages.visible_at set on rows that were nacked with a delay.
// Such a row is delivered at once, at its offset; the file takes publishes
// and acks as a new one does, and its deliveries column is left alone.
func TestFileWithVisibleAtKeepsWorking(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mailbox.db")
	db := testenv.SQLite(t, path)
	if _, err := db.Exec(`
		CREATE TABLE mailbox_messages (
			id         INTEGER PRIMARY KEY AUTOINCREMENT,
			partition  INTEGER NOT NULL,
			msg_id     TEXT    NOT NULL,
			address    TEXT    NOT NULL,
			payload    BLOB    NOT NULL,
			headers    BLOB,
			deliveries INTEGER NOT NULL DEFAULT 0,
			visible_at INTEGER NOT NULL DEFAULT 0,
			claim      INTEGER,
			created_at INTEGER NOT NULL
		);
		CREATE INDEX mailbox_messages_delayed ON mailbox_messages (partition, visible_at) WHERE visible_at > 0;
		INSERT INTO mailbox_messages (partition, msg_id, address, payload, deliveries, visible_at, created_at)
			VALUES (0, 'nacked', 't/0', x'', 1, ?, 1)`, time.Now().Add(time.Hour).UnixNano()); err != nil {
		t.Fatal(err)
	}
	nacked := int64(count(t, db, `SELECT id FROM mailbox_messages WHERE msg_id = 'nacked'`))
	mb := open(t, path, sqlite.Options{Partitions: 1})
	publishN(t, mb, 2)

	r := backendtest.Record(t, mb.Consumer(sqlite.ConsumerOptions{PollInterval: time.Millisecond}), false)
	cl := r.Claim(t)
	waitfor.Until(t, 30*time.Second, "all 3", func() bool { return len(r.Received()) == 3 })
	got := r.Received()
	if got[0].ID != "nacked" || got[0].Offset != nacked {
		t.Errorf("first delivery is %s at offset %d, want the nacked row at its offset %d", got[0].ID, got[0].Offset, nacked)
	}
	for i, m := range got[1:] {
		if m.Offset <= got[i].Offset {
			t.Errorf("delivery %d at offset %d after %d, want publish order", i+1, m.Offset, got[i].Offset)
		}
	}
	// Every row is taken now; none had its deliveries touched.
	if n := count(t, db, `SELECT count(*) FROM mailbox_messages WHERE deliveries != iif(msg_id = 'nacked', 1, 0)`); n != 0 {
		t.Errorf("%d rows with their deliveries column changed, want it left alone", n)
	}
	if err := cl.Ack(t.Context(), got...); err != nil {
		t.Fatal(err)
	}
	if err := cl.Release(t.Context()); err != nil {
		t.Fatal(err)
	}
	if n := count(t, db, `SELECT count(*) FROM mailbox_messages`); n != 0 {
		t.Errorf("%d messages left after acking all, want 0", n)
	}
}
