package redis_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/postbox-dev/postbox/channel"
	"github.com/postbox-dev/postbox/channel/channeltest"
	"github.com/postbox-dev/postbox/channel/internal/backendtest"
	"github.com/postbox-dev/postbox/channel/redis"
	"github.com/postbox-dev/postbox/internal/testenv"
)

// freshMailbox returns a mailbox name no other test uses, and deletes its
// keys when t ends.
func freshMailbox(t testing.TB) string {
	t.Helper()
	var b [6]byte
	_, _ = rand.Read(b[:])
	name := "test-" + strings.NewReplacer("/", "-", " ", "-").Replace(t.Name()) + "-" + hex.EncodeToString(b[:])
	c := testenv.RedisClient(t)
	t.Cleanup(func() {
		ctx := context.Background()
		for _, k := range mailboxKeys(t, c, name) {
			c.Del(ctx, k)
		}
	})
	return name
}

// mailboxKeys lists the keys of a mailbox.
func mailboxKeys(t testing.TB, c *goredis.Client, name string) []string {
	t.Helper()
	var keys []string
	iter := c.Scan(context.Background(), 0, "{postbox:"+name+"}:*", 1000).Iterator()
	for iter.Next(context.Background()) {
		keys = append(keys, iter.Val())
	}
	if err := iter.Err(); err != nil {
		t.Fatalf("scan keys of %s: %v", name, err)
	}
	return keys
}

// open opens the mailbox or fails the test, closing it when t ends.
func open(t testing.TB, name string, opts redis.Options) *redis.Mailbox {
	t.Helper()
	return backendtest.MustOpen(t, name, func() (*redis.Mailbox, error) {
		return redis.Open(context.Background(), testenv.Redis(t), name, opts)
	})
}

// tryOpen opens the mailbox, closing it when t ends.
func tryOpen(t testing.TB, name string, opts redis.Options) (*redis.Mailbox, error) {
	return backendtest.Open(t, name, func() (*redis.Mailbox, error) {
		return redis.Open(context.Background(), testenv.Redis(t), name, opts)
	})
}

// testConsumerOptions fail over fast, so rebalancing tests take seconds.
var testConsumerOptions = redis.ConsumerOptions{LeaseTTL: time.Second, MaxWait: 50 * time.Millisecond}

func TestConformance(t *testing.T) {
	testenv.Redis(t)
	channeltest.Run(t, channeltest.Features{Leases: true}, func(t *testing.T) channeltest.Mailbox {
		name := freshMailbox(t)
		// Each consumer has a client of its own, as another worker
		// process would.
		return channeltest.MailboxOf(t, open(t, name, redis.Options{Partitions: 4}), func(t *testing.T) channel.Consumer {
			return open(t, name, redis.Options{}).Consumer(testConsumerOptions)
		})
	})
}

func TestPartitionCountIsFixed(t *testing.T) {
	backendtest.PartitionCountIsFixed(t, func(t *testing.T) backendtest.Opener[*redis.Mailbox] {
		name := freshMailbox(t)
		return func(t *testing.T, n int) (*redis.Mailbox, error) {
			return tryOpen(t, name, redis.Options{Partitions: n})
		}
	})
}

func TestOptionsAreValidated(t *testing.T) {
	// Options are checked before connecting: no server needed.
	for _, tc := range []struct {
		name  string
		opts  redis.Options
		field string
	}{
		{"m", redis.Options{Partitions: -1}, "Options.Partitions"},
		{"m", redis.Options{Partitions: 1 << 20}, "Options.Partitions"},
		{"m", redis.Options{PoolSize: -1}, "Options.PoolSize"},
		{"a{b}", redis.Options{}, "braces"},
		{"", redis.Options{}, "empty mailbox name"},
	} {
		_, err := redis.Open(t.Context(), "127.0.0.1:1", tc.name, tc.opts)
		backendtest.Names(t, err, tc.field, "Open(%q, %+v)", tc.name, tc.opts)
	}
	mb := open(t, freshMailbox(t), redis.Options{Partitions: 1})
	for _, tc := range []struct {
		opts  redis.ConsumerOptions
		field string
	}{
		{redis.ConsumerOptions{LeaseTTL: time.Millisecond}, "ConsumerOptions.LeaseTTL"},
		{redis.ConsumerOptions{BatchSize: -1}, "ConsumerOptions.BatchSize"},
		{redis.ConsumerOptions{Buffer: -1}, "ConsumerOptions.Buffer"},
		{redis.ConsumerOptions{MaxWait: time.Microsecond}, "ConsumerOptions.MaxWait"},
		{redis.ConsumerOptions{AckInterval: -1}, "ConsumerOptions.AckInterval"},
	} {
		err := mb.Consumer(tc.opts).Run(t.Context(), func(channel.Claim) {})
		backendtest.Names(t, err, tc.field, "Run with %+v", tc.opts)
	}
}

func TestNewLeavesCallersClientOpen(t *testing.T) {
	c := testenv.RedisClient(t)
	mb, err := redis.New(t.Context(), c, freshMailbox(t), redis.Options{Partitions: 2})
	if err != nil {
		t.Fatal(err)
	}
	if mb.Partitions() != 2 {
		t.Errorf("%d partitions, want 2", mb.Partitions())
	}
	if err := mb.Close(); err != nil {
		t.Fatal(err)
	}
	if err := mb.Publisher().Publish(t.Context(), channel.Message{Address: channel.Address{Type: "a", ID: "1"}}); !errors.Is(err, channel.ErrClosed) {
		t.Errorf("Publish after Close: %v, want ErrClosed", err)
	}
	if err := c.Ping(t.Context()).Err(); err != nil {
		t.Errorf("the caller's client after Close: %v", err)
	}
}

func TestOpenUnreachableSaysWhatToDo(t *testing.T) {
	_, err := redis.Open(t.Context(), "127.0.0.1:1", "m", redis.Options{})
	if err == nil || !strings.Contains(err.Error(), "scripts/services.sh") {
		t.Fatalf("Open of a closed port: err = %v, want a hint at scripts/services.sh", err)
	}
}

// Every key of a mailbox carries its hash tag, so that one script may
// touch them all on Redis Cluster.
func TestKeysShareOneHashTag(t *testing.T) {
	name := freshMailbox(t)
	mb := open(t, name, redis.Options{Partitions: 2})
	ctx := t.Context()
	if err := mb.Publisher().Publish(ctx, channel.Message{Address: channel.Address{Type: "k", ID: "1"}, Payload: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	got := consume(t, mb, 1, nil)
	if err := mb.DLQ().Put(ctx, envelopeOf(got[0], got)); err != nil {
		t.Fatal(err)
	}
	keys := mailboxKeys(t, testenv.RedisClient(t), name)
	if len(keys) < 6 {
		t.Fatalf("keys = %q, want meta, streams, epochs, dlq and its index at least", keys)
	}
	// SCAN matched the prefix; check the tag is the whole {…} part.
	for _, k := range keys {
		if !strings.HasPrefix(k, "{postbox:"+name+"}:") {
			t.Errorf("key %q does not start with the mailbox's hash tag", k)
		}
	}
}

// An entry ID maps to an Offset that grows with it, and PublishedAt is the
// entry's time.
func TestOffsetsFollowEntryIDs(t *testing.T) {
	mb := open(t, freshMailbox(t), redis.Options{Partitions: 1})
	var msgs []channel.Message
	for i := range 50 {
		msgs = append(msgs, channel.Message{Address: channel.Address{Type: "o", ID: "1"}, Payload: []byte{byte(i)}})
	}
	before := time.Now()
	if err := mb.Publisher().Publish(t.Context(), msgs...); err != nil {
		t.Fatal(err)
	}
	got := consume(t, mb, 50, nil)
	for i, m := range got {
		if i > 0 && m.Offset <= got[i-1].Offset {
			t.Errorf("offset %d after %d", m.Offset, got[i-1].Offset)
		}
		if m.Payload[0] != byte(i) {
			t.Errorf("message %d delivered at %d", m.Payload[0], i)
		}
		ms := m.Offset >> 20
		if ms != m.PublishedAt.UnixMilli() || m.PublishedAt.Before(before.Add(-time.Minute)) {
			t.Errorf("offset %d (ms %d), PublishedAt %v", m.Offset, ms, m.PublishedAt)
		}
		if m.Mailbox != mb.Name() {
			t.Errorf("Mailbox %q, want %q", m.Mailbox, mb.Name())
		}
	}
}

// Publish returns ErrClosed once the Mailbox is closed, and so do Run and
// the dead-letter store.
func TestClosedMailbox(t *testing.T) {
	mb, err := redis.Open(t.Context(), testenv.Redis(t), freshMailbox(t), redis.Options{Partitions: 1})
	if err != nil {
		t.Fatal(err)
	}
	pub := mb.Publisher()
	if err := mb.Close(); err != nil {
		t.Fatal(err)
	}
	if err := mb.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	ctx := t.Context()
	if err := pub.Publish(ctx, channel.Message{Address: channel.Address{Type: "a", ID: "1"}}); !errors.Is(err, channel.ErrClosed) {
		t.Errorf("Publish after Close: %v, want ErrClosed", err)
	}
	if err := mb.Consumer(redis.ConsumerOptions{}).Run(ctx, func(channel.Claim) {}); !errors.Is(err, channel.ErrClosed) {
		t.Errorf("Run after Close: %v, want ErrClosed", err)
	}
	if _, err := mb.DLQ().List(ctx); !errors.Is(err, channel.ErrClosed) {
		t.Errorf("List after Close: %v, want ErrClosed", err)
	}
}

// consume runs a consumer of mb until it has received n messages, handing
// each to handle (nil: ack it), and returns them in the order received.
func consume(t *testing.T, mb *redis.Mailbox, n int, handle func(channel.Claim, channel.Message)) []channel.Message {
	t.Helper()
	return backendtest.Consume(t, mb.Consumer(testConsumerOptions), n, handle)
}
