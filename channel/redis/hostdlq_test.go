package redis_test

import (
	"context"
	"strings"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/postbox-dev/postbox/actorhost"
	"github.com/postbox-dev/postbox/channel/redis"
	"github.com/postbox-dev/postbox/internal/testenv"
	"github.com/postbox-dev/postbox/internal/waitfor"
	"github.com/postbox-dev/postbox/journal/memory"
)

// Through a host: an entry with no actor address is dead-lettered ("no
// actor address", the address field in HeaderBadAddress) and acked, and
// entries whose identifiers a journal cannot store neither stall the partition
// nor stay pending; the actor's good message is processed.
func TestHostDeadLettersGarbledEntries(t *testing.T) {
	name := freshMailbox(t)
	mb := open(t, name, redis.Options{Partitions: 1})
	c := testenv.RedisClient(t)
	stream := "{postbox:" + name + "}:s:0"
	for _, fields := range [][]any{
		{"id", "no-address", "payload", "p"},
		{"id", "no-slash", "address", "nokey", "h:trace", "t1"},
		{"id", "nul", "address", "t/a\x00b"},
		{"id", "\xff\xfe", "address", "t/2"},
		{"id", "long", "address", "t/" + strings.Repeat("x", 1100)},
		{"id", "good", "address", "t/1", "payload", "{}"},
	} {
		if err := c.XAdd(t.Context(), &goredis.XAddArgs{Stream: stream, Values: fields}).Err(); err != nil {
			t.Fatal(err)
		}
	}

	reg := actorhost.NewRegistry()
	if err := actorhost.Register(reg, "t", func(*actorhost.Context, *struct{}, actorhost.Message) error { return nil }); err != nil {
		t.Fatal(err)
	}
	host, err := actorhost.New(actorhost.Config{
		Registry: reg, Journal: memory.New(memory.Options{}), DeadLetters: mb.DLQ(),
		Consumer: open(t, name, redis.Options{}).Consumer(testConsumerOptions),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := host.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := host.Stop(ctx); err != nil {
			t.Errorf("stop host: %v", err)
		}
	}()
	waitfor.Until(t, 20*time.Second, "every entry acked (the partition stream empty)", func() bool {
		n, err := c.XLen(t.Context(), stream).Result()
		return err == nil && n == 0
	})
	if s := host.Stats(); s.Processed < 1 {
		t.Errorf("host stats %+v: the good message was not processed", s)
	}
	letters, err := mb.DLQ().List(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	found := map[string]bool{}
	for _, env := range letters {
		found[env.MessageID] = true
		switch env.MessageID {
		case "no-address", "no-slash":
			if env.Reason != "no actor address" || env.Address != "" {
				t.Errorf("dead letter of %s: reason %q, address %q; want no actor address", env.MessageID, env.Reason, env.Address)
			}
		}
		if env.MessageID == "no-slash" && (env.Headers[redis.HeaderBadAddress] != "nokey" || env.Headers["trace"] != "t1") {
			t.Errorf("dead letter of no-slash: headers %q, want the address field and the entry's headers", env.Headers)
		}
	}
	for _, id := range []string{"no-address", "no-slash"} {
		if !found[id] {
			t.Errorf("%s is not in the DLQ (it holds %d dead letters)", id, len(letters))
		}
	}
	t.Logf("%d dead letters; host stats %+v", len(letters), host.Stats())
}
