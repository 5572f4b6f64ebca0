package redis_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"sync"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/postbox-dev/postbox/internal/testenv"
	"github.com/postbox-dev/postbox/journal"
	"github.com/postbox-dev/postbox/journal/journaltest"
	"github.com/postbox-dev/postbox/journal/redis"
)

// rawClient is a plain client on REDIS_ADDR, closed when t ends.
func rawClient(t testing.TB) *goredis.Client {
	t.Helper()
	c := goredis.NewClient(&goredis.Options{Addr: testenv.Redis(t)})
	t.Cleanup(func() { c.Close() })
	return c
}

// namespaceKeys returns the keys of namespace ns.
func namespaceKeys(t testing.TB, c *goredis.Client, ns string) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var keys []string
	iter := c.Scan(ctx, 0, "{postbox:"+ns+"}:*", 1000).Iterator()
	for iter.Next(ctx) {
		keys = append(keys, iter.Val())
	}
	if err := iter.Err(); err != nil {
		t.Fatalf("scan namespace %s: %v", ns, err)
	}
	return keys
}

// freshNamespace returns a namespace no other test uses, whose keys are
// deleted when t ends.
func freshNamespace(t testing.TB) string {
	t.Helper()
	b := make([]byte, 6)
	rand.Read(b)
	ns := "test-" + hex.EncodeToString(b)
	c := rawClient(t)
	t.Cleanup(func() {
		if keys := namespaceKeys(t, c, ns); len(keys) > 0 {
			if err := c.Del(context.Background(), keys...).Err(); err != nil {
				t.Errorf("delete namespace %s: %v", ns, err)
			}
		}
	})
	return ns
}

func mustOpen(t testing.TB, opts redis.Options) *redis.Journal {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	j, err := redis.Open(ctx, testenv.Redis(t), opts)
	if err != nil {
		t.Fatalf("Open(%+v): %v", opts, err)
	}
	t.Cleanup(func() { j.Close() })
	return j
}

// opener opens each test's journal in a namespace of its own, and
// remembers which, so that reopen can find it again.
type opener struct {
	opts  redis.Options
	where sync.Map // journal.Journal -> redis.Options
}

func (o *opener) open(t *testing.T) journal.Journal {
	t.Helper()
	opts := o.opts
	opts.Namespace = freshNamespace(t)
	return o.openAt(t, opts)
}

func (o *opener) openAt(t *testing.T, opts redis.Options) journal.Journal {
	j := mustOpen(t, opts)
	o.where.Store(journal.Journal(j), opts)
	return j
}

func (o *opener) reopen(t *testing.T, j journal.Journal) journal.Journal {
	t.Helper()
	opts, ok := o.where.Load(j)
	if !ok {
		t.Fatal("reopen: journal was not opened by this opener")
	}
	return o.openAt(t, opts.(redis.Options))
}

func TestConformance(t *testing.T) {
	testenv.Redis(t)
	o := &opener{}
	journaltest.Run(t, journaltest.Features{
		KeepCheckpoints: redis.DefaultKeepCheckpoints,
		Reopen:          o.reopen,
		Share:           o.reopen,
	}, o.open)
}

func TestConformanceCompact(t *testing.T) {
	testenv.Redis(t)
	o := &opener{opts: redis.Options{Compact: true, KeepCheckpoints: 2}}
	journaltest.Run(t, journaltest.Features{
		KeepCheckpoints: 2,
		Compacts:        true,
		Reopen:          o.reopen,
		Share:           o.reopen,
	}, o.open)
}

func TestConformanceKeepAllCheckpoints(t *testing.T) {
	testenv.Redis(t)
	o := &opener{opts: redis.Options{KeepCheckpoints: -1}}
	journaltest.Run(t, journaltest.Features{Reopen: o.reopen, Share: o.reopen}, o.open)
}
