package bench

import (
	"context"
	"fmt"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/postbox-dev/postbox/actorhost"
	"github.com/postbox-dev/postbox/actors/counter"
	"github.com/postbox-dev/postbox/channel"
	chredis "github.com/postbox-dev/postbox/channel/redis"
	"github.com/postbox-dev/postbox/internal/testenv"
	"github.com/postbox-dev/postbox/journal"
	jredis "github.com/postbox-dev/postbox/journal/redis"
)

// redisBenchName returns a key tag no other run uses, and deletes every
// key under {postbox:<tag>} and {postbox:<tag>-j} when the benchmark ends.
func redisBenchName(b *testing.B, c *goredis.Client, what string) string {
	b.Helper()
	tag := fmt.Sprintf("bench-%s-%s", what, strconv.FormatInt(time.Now().UnixNano(), 36))
	b.Cleanup(func() {
		patterns := []string{"{postbox:" + tag + "}:*", "{postbox:" + tag + "-j}:*", "{" + tag + "}:*"}
		if err := testenv.DeleteRedisKeys(context.Background(), c, patterns...); err != nil {
			b.Logf("deleting the benchmark's keys: %v", err)
		}
	})
	return tag
}

// rawRedisRate is the reference: messages per second of a bare loop on
// the same server, with no journal. Each round is three round trips: one
// pipeline of XADDs of a batch of messages (the same fields as a Publisher
// writes) spread over the partition streams, one XREADGROUP of them all, and
// one pipeline of XACK and XDEL per stream (a mailbox deletes what it
// acked, so that a stream holds only pending messages).
func rawRedisRate(b *testing.B, c *goredis.Client, msgs []channel.Message, partitions int) float64 {
	b.Helper()
	ctx := context.Background()
	tag := redisBenchName(b, c, "raw")
	streams := make([]string, partitions)
	for p := range streams {
		streams[p] = fmt.Sprintf("{%s}:s:%d", tag, p)
		if err := c.XGroupCreateMkStream(ctx, streams[p], "g", "0").Err(); err != nil {
			b.Fatal(err)
		}
	}
	read := make([]string, 0, 2*partitions)
	read = append(read, streams...)
	for range partitions {
		read = append(read, ">")
	}
	const batch = 500
	start := time.Now()
	for i := 0; i < len(msgs); i += batch {
		chunk := msgs[i:min(i+batch, len(msgs))]
		if _, err := c.Pipelined(ctx, func(p goredis.Pipeliner) error {
			for _, m := range chunk {
				addr := m.Address.String()
				p.XAdd(ctx, &goredis.XAddArgs{
					Stream: streams[channel.HomePartition(addr, partitions)],
					Values: []any{"id", m.ID, "address", addr, "payload", m.Payload},
				})
			}
			return nil
		}); err != nil {
			b.Fatal(err)
		}
		got, err := c.XReadGroup(ctx, &goredis.XReadGroupArgs{Group: "g", Consumer: "c", Streams: read, Count: batch}).Result()
		if err != nil {
			b.Fatal(err)
		}
		n := 0
		if _, err := c.Pipelined(ctx, func(p goredis.Pipeliner) error {
			for _, s := range got {
				ids := make([]string, len(s.Messages))
				for k, m := range s.Messages {
					ids[k] = m.ID
				}
				n += len(ids)
				p.XAck(ctx, s.Stream, "g", ids...)
				p.XDel(ctx, s.Stream, ids...)
			}
			return nil
		}); err != nil {
			b.Fatal(err)
		}
		if n != len(chunk) {
			b.Fatalf("raw loop read %d of a batch of %d", n, len(chunk))
		}
	}
	return float64(len(msgs)) / time.Since(start).Seconds()
}

// redisPipelineRate publishes msgs to a fresh Redis mailbox (untimed), runs
// a host with a fresh Redis journal on the same server over them until
// every one is journaled, and returns msgs/s from host start to the last
// completion, with the host's stats and its entries per journal Append.
func redisPipelineRate(b *testing.B, c *goredis.Client, addr string, partitions int, msgs []channel.Message, cfg actorhost.Config) (float64, actorhost.Stats, float64) {
	b.Helper()
	ctx := context.Background()
	name := redisBenchName(b, c, "pipeline")
	mb, err := chredis.Open(ctx, addr, name, chredis.Options{Partitions: partitions})
	if err != nil {
		b.Fatal(err)
	}
	defer mb.Close()
	publish(b, mb.Publisher(), msgs)
	j, err := jredis.Open(ctx, addr, jredis.Options{Namespace: name + "-j"})
	if err != nil {
		b.Fatal(err)
	}
	defer j.Close()
	cj := &countedJournal{Journal: j}
	reg := actorhost.NewRegistry()
	counter.Register(reg, nil)
	cfg.Registry, cfg.Journal, cfg.DeadLetters = reg, cj, mb.DLQ()
	cfg.Consumer = mb.Consumer(chredis.ConsumerOptions{})
	rate, st := runHost(b, cfg, len(msgs))
	return rate, st, cj.perCall()
}

// BenchmarkRedisPipeline: 100k preloaded messages for 1,000 counters in a
// Redis mailbox of 8 partitions, a Redis journal on the same server, one side
// effect each, checkpoints every 100, against the raw XADD, XREADGROUP,
// XACK loop on the same server in the same run (run before and after the
// pipeline; raw_msgs/s is their combined rate). With appendfsync always
// (scripts/services.sh) every journal write and every ack batch waits for
// an fsync of the append-only file.
func BenchmarkRedisPipeline(b *testing.B) {
	addr := testenv.Redis(b)
	c := goredis.NewClient(&goredis.Options{Addr: addr})
	b.Cleanup(func() { c.Close() }) // after the cleanups that delete the keys
	const actors, count, partitions = 1000, 100_000, 8
	msgs := counterMessages(actors, count)
	var rate, raw, groupCommit float64
	var st actorhost.Stats
	for range b.N {
		// The reference runs before and after, so that a change of load on
		// the machine during the run weighs on both sides.
		before := rawRedisRate(b, c, msgs, partitions)
		rate, st, groupCommit = redisPipelineRate(b, c, addr, partitions, msgs, actorhost.Config{
			Concurrency: 1000, CheckpointEvery: 100, MaxActors: 2000,
		})
		if st.Processed != count || st.DeadLettered != 0 {
			b.Fatalf("stats %+v", st)
		}
		after := rawRedisRate(b, c, msgs, partitions)
		raw = 2 / (1/before + 1/after) // messages over the time of both runs
	}
	b.ReportMetric(rate, "msgs/s")
	b.ReportMetric(raw, "raw_msgs/s")
	b.ReportMetric(rate/raw, "raw_ratio")
	b.ReportMetric(groupCommit, "entries/append")
}

// countedJournal counts Append calls and the entries they carry: the
// group-commit size.
type countedJournal struct {
	journal.Journal
	calls, entries atomic.Int64
}

func (c *countedJournal) Append(ctx context.Context, batches ...journal.Batch) error {
	c.calls.Add(1)
	for _, b := range batches {
		c.entries.Add(int64(len(b.Entries)))
	}
	return c.Journal.Append(ctx, batches...)
}

// perCall is entries per Append call.
func (c *countedJournal) perCall() float64 {
	return float64(c.entries.Load()) / max(float64(c.calls.Load()), 1)
}
