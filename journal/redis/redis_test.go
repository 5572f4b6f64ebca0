package redis_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/postbox-dev/postbox/internal/testenv"
	"github.com/postbox-dev/postbox/journal"
	"github.com/postbox-dev/postbox/journal/internal/backendtest"
	"github.com/postbox-dev/postbox/journal/journaltest"
	"github.com/postbox-dev/postbox/journal/redis"
)

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
	ns := backendtest.UniqueName("test-")
	c := testenv.RedisClient(t)
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
	return backendtest.Open(t, opts, func(ctx context.Context) (*redis.Journal, error) {
		return redis.Open(ctx, testenv.Redis(t), opts)
	})
}

func TestConformance(t *testing.T)                   { conformance(t, journaltest.Defaults) }
func TestConformanceCompact(t *testing.T)            { conformance(t, journaltest.Compacting) }
func TestConformanceKeepAllCheckpoints(t *testing.T) { conformance(t, journaltest.KeepAll) }

// conformance runs the suite on journals in namespaces of their own.
func conformance(t *testing.T, r journaltest.Retention) {
	testenv.Redis(t)
	journaltest.RunStores(t, r.Features(), func(t *testing.T) redis.Options {
		return redis.Options{Namespace: freshNamespace(t), KeepCheckpoints: r.KeepCheckpoints, Compact: r.Compact}
	}, func(t *testing.T, opts redis.Options) journal.Journal {
		return mustOpen(t, opts)
	})
}

func readAll(t *testing.T, j journal.Journal, actor string) []journal.Entry {
	t.Helper()
	var got []journal.Entry
	if err := j.Read(backendtest.Context(t), actor, 1, func(e journal.Entry) error { got = append(got, e); return nil }); err != nil {
		t.Fatalf("Read(%s): %v", actor, err)
	}
	return got
}

func TestOpenRejectsBadOptions(t *testing.T) {
	// Options are checked before connecting: no server needed.
	_, err := redis.Open(backendtest.Context(t), "127.0.0.1:1", redis.Options{Namespace: "a}b"})
	if err == nil || !strings.Contains(err.Error(), "Options.Namespace") {
		t.Fatalf("Open with a brace in the namespace: err = %v, want one naming Options.Namespace", err)
	}
}

func TestOpenUnreachableSaysWhatToDo(t *testing.T) {
	_, err := redis.Open(backendtest.Context(t), "127.0.0.1:1", redis.Options{})
	if err == nil || !strings.Contains(err.Error(), "scripts/services.sh") {
		t.Fatalf("Open of a closed port: err = %v, want a hint at scripts/services.sh", err)
	}
}

// Every key of a journal carries its namespace's hash tag, so that one
// script may touch them all on Redis Cluster.
func TestKeysShareOneHashTag(t *testing.T) {
	ns := freshNamespace(t)
	j := mustOpen(t, redis.Options{Namespace: ns})
	ctx := backendtest.Context(t)
	e, err := journal.AcquireEpoch(ctx, j, "p0")
	if err != nil {
		t.Fatal(err)
	}
	err = j.Append(ctx, journal.Batch{Partition: "p0", Epoch: e,
		Entries:     []journal.Entry{backendtest.Entry("counter/{1}", 1, journal.KindComplete, "m")},
		Checkpoints: []journal.Checkpoint{{Actor: "counter/{1}", Seq: 1, State: []byte("s")}},
	})
	if err != nil {
		t.Fatal(err)
	}
	c := testenv.RedisClient(t)
	keys := namespaceKeys(t, c, ns)
	if len(keys) != 4 {
		t.Fatalf("keys = %q, want epochs, entries, outcomes and checkpoints", keys)
	}
	// A horizon past 2^53 is stored as its decimal string, exactly.
	if err := j.Append(ctx, journal.Batch{Partition: "p0", Epoch: e, Horizon: 1<<62 + 1}); err != nil {
		t.Fatal(err)
	}
	keys = namespaceKeys(t, c, ns)
	if len(keys) != 5 {
		t.Fatalf("keys = %q, want the horizons hash too", keys)
	}
	for _, k := range keys {
		if !strings.HasPrefix(k, "{postbox:"+ns+"}:") {
			t.Errorf("key %q does not start with the namespace's hash tag", k)
		}
	}
	if got, err := c.HGet(ctx, "{postbox:"+ns+"}:horizons", "p0").Result(); err != nil || got != "4611686018427387905" {
		t.Fatalf("stored horizon = %q, %v; want \"4611686018427387905\"", got, err)
	}
}

func TestNewLeavesCallersClientOpen(t *testing.T) {
	c := testenv.RedisClient(t)
	ctx := backendtest.Context(t)
	j, err := redis.New(ctx, c, redis.Options{Namespace: freshNamespace(t)})
	if err != nil {
		t.Fatal(err)
	}
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := j.LastSeq(ctx, "a/1"); !errors.Is(err, journal.ErrClosed) {
		t.Fatalf("LastSeq after Close: err = %v, want ErrClosed", err)
	}
	if err := c.Ping(ctx).Err(); err != nil {
		t.Fatalf("the caller's client after Close: %v", err)
	}
}

// Data and states are bytes, not text, and actors and message IDs may hold
// the key separators and braces: all come back as they went in.
func TestBinarySafe(t *testing.T) {
	j := mustOpen(t, redis.Options{Namespace: freshNamespace(t)})
	ctx := backendtest.Context(t)
	actor := "a/{x}:e:}ü"
	es := []journal.Entry{
		{Actor: actor, Seq: 1, Kind: journal.KindAttempt, MsgID: "m:{o}:ÿ", Data: []byte{0, 1, 2, 0xff}},
		{Actor: actor, Seq: 2, Kind: journal.KindComplete, MsgID: "m:{o}:ÿ", Data: []byte{}},
		{Actor: actor, Seq: 3, Kind: journal.KindDeadLetter, MsgID: ":", Data: nil},
	}
	state := []byte{0, 0, 0}
	err := j.Append(ctx, journal.Batch{Partition: "p:{x}}ü", Entries: es,
		Checkpoints: []journal.Checkpoint{{Actor: actor, Seq: 2, State: state}}})
	if err != nil {
		t.Fatal(err)
	}
	got := readAll(t, j, actor)
	if len(got) != 3 {
		t.Fatalf("read %d entries, want 3", len(got))
	}
	for i, e := range got {
		w := es[i]
		if e.Actor != w.Actor || e.Seq != w.Seq || e.Kind != w.Kind || e.MsgID != w.MsgID || !bytes.Equal(e.Data, w.Data) || (e.Data == nil) != (w.Data == nil) {
			t.Errorf("entry %d = %+v, want %+v", i, e, w)
		}
	}
	o, ok, err := j.Outcome(ctx, actor, "m:{o}:ÿ")
	if err != nil || !ok || o.Seq != 2 {
		t.Fatalf("Outcome = %+v, %v, %v; want seq 2", o, ok, err)
	}
	cp, ok, err := j.LoadCheckpoint(ctx, actor, journal.MaxSeq)
	if err != nil || !ok || !bytes.Equal(cp.State, state) {
		t.Fatalf("LoadCheckpoint = %+v, %v, %v; want state %q", cp, ok, err, state)
	}
}

// Compaction keeps each actor's last entry, whatever its kind, and the
// outcomes (without data, in the history and in the outcome index) below
// the oldest kept checkpoint.
func TestCompactionEntries(t *testing.T) {
	j := mustOpen(t, redis.Options{Namespace: freshNamespace(t), Compact: true, KeepCheckpoints: 1})
	ctx := backendtest.Context(t)
	backendtest.Compacted(t, ctx, j)
	var got []string
	for _, e := range readAll(t, j, "a/1") {
		got = append(got, fmt.Sprintf("%d:%d:%s", e.Seq, e.Kind, e.Data))
	}
	want := "2:3: 4:3: 6:3: 8:3: 9:1:a/1#9"
	if strings.Join(got, " ") != want {
		t.Fatalf("entries after compaction = %q, want %q", got, want)
	}
	o, ok, err := j.Outcome(ctx, "a/1", "m0")
	if err != nil || !ok || o.Seq != 2 || o.Data != nil {
		t.Fatalf("Outcome(m0) = %+v, %v, %v; want seq 2 without data", o, ok, err)
	}
}

func TestRejectsWhatRedisCannotHold(t *testing.T) {
	j := mustOpen(t, redis.Options{Namespace: freshNamespace(t)})
	ctx := backendtest.Context(t)
	for _, e := range []journal.Entry{
		{Actor: "a/1", Seq: 1 << 54, Kind: journal.KindAttempt, MsgID: "m"},
		{Actor: "a/1", Seq: 1, Kind: journal.KindAttempt, MsgID: strings.Repeat("m", 1<<16)},
		{Actor: "a/1", Seq: 1, Kind: 0, MsgID: "m"},
	} {
		err := j.Append(ctx, journal.Batch{Partition: "p0", Entries: []journal.Entry{e}})
		if !errors.Is(err, journal.ErrInvalid) || !journal.IsPermanent(err) {
			t.Errorf("Append(seq %d, kind %d, %d-byte message ID): err = %v, want ErrInvalid", e.Seq, e.Kind, len(e.MsgID), err)
		}
	}
}

// BenchmarkAppend measures group commit against REDIS_ADDR, as
// journaltest.BenchAppend describes. With appendfsync always each Append
// costs one fsync.
func BenchmarkAppend(b *testing.B) {
	journaltest.BenchAppend(b, func(b *testing.B) journal.Journal {
		return mustOpen(b, redis.Options{Namespace: freshNamespace(b)})
	}, nil)
}
