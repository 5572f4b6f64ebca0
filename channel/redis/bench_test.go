package redis_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/postbox-dev/postbox/channel"
	"github.com/postbox-dev/postbox/channel/internal/backendtest"
	"github.com/postbox-dev/postbox/channel/redis"
	"github.com/postbox-dev/postbox/internal/testenv"
)

// benchBatch is how many messages one Publish call (or one raw pipeline)
// carries; benchPartitions is the mailbox's partition count.
const (
	benchBatch      = 100
	benchPartitions = 8
)

// BenchmarkPublishConsumeAck publishes b.N messages in batches of 100 while
// a consumer receives and acks them one by one, as a host does, through the
// channel; then it does the same with a raw go-redis loop on the same
// server: pipelined XADDs (100 per round trip) from one goroutine,
// XREADGROUP of up to 256 entries over all partition streams and a pipelined
// XACK+XDEL per read from another (the channel deletes acked entries too).
// It reports both rates and their ratio.
func BenchmarkPublishConsumeAck(b *testing.B) {
	addr := testenv.Redis(b)
	chanRate := benchChannel(b, addr)
	rawRate := benchRaw(b, addr)
	b.ReportMetric(chanRate, "chan-msgs/s")
	b.ReportMetric(rawRate, "raw-msgs/s")
	b.ReportMetric(chanRate/rawRate, "chan/raw")
}

// benchChannel runs b.N messages through a Mailbox and returns messages
// per second, from the first publish to the last ack made durable.
func benchChannel(b *testing.B, addr string) float64 {
	name := freshMailbox(b)
	mb, err := redis.Open(context.Background(), addr, name, redis.Options{Partitions: benchPartitions})
	if err != nil {
		b.Fatal(err)
	}
	defer mb.Close()
	pub := mb.Publisher()
	n := b.N
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	wg.Go(func() { backendtest.PublishBatches(b, pub, n, benchBatch) })
	// The last acks are durable once the consumer has stopped.
	backendtest.ConsumeAcking(b, mb.Consumer(redis.ConsumerOptions{}), n)
	elapsed := time.Since(start)
	wg.Wait()
	b.StopTimer()
	return float64(n) / elapsed.Seconds()
}

// benchRaw runs b.N messages through plain streams and returns messages
// per second.
func benchRaw(b *testing.B, addr string) float64 {
	name := freshMailbox(b)
	c := goredis.NewClient(&goredis.Options{Addr: addr})
	defer c.Close()
	ctx := context.Background()
	streams := make([]string, benchPartitions)
	for s := range streams {
		streams[s] = fmt.Sprintf("{postbox:%s}:s:%d", name, s)
		if err := c.XGroupCreateMkStream(ctx, streams[s], "raw", "0").Err(); err != nil {
			b.Fatal(err)
		}
	}
	read := make([]string, 0, 2*benchPartitions)
	read = append(read, streams...)
	for range streams {
		read = append(read, ">")
	}
	n := b.N
	b.StartTimer()
	start := time.Now()
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 0; i < n; i += benchBatch {
			msgs := backendtest.BenchMessages(i, min(benchBatch, n-i))
			_, err := c.Pipelined(ctx, func(p goredis.Pipeliner) error {
				for _, m := range msgs {
					addr := m.Address.String()
					p.XAdd(ctx, &goredis.XAddArgs{
						Stream: streams[channel.HomePartition(addr, benchPartitions)],
						Values: []any{"id", channel.NewMessageID(), "address", addr, "payload", m.Payload, "h:trace", m.Headers["trace"]},
					})
				}
				return nil
			})
			if err != nil {
				b.Error(err)
				return
			}
		}
	})
	for got := 0; got < n; {
		res, err := c.XReadGroup(ctx, &goredis.XReadGroupArgs{
			Group: "raw", Consumer: "c", Streams: read, Count: 256, Block: 100 * time.Millisecond,
		}).Result()
		if err == goredis.Nil {
			continue
		}
		if err != nil {
			b.Fatal(err)
		}
		_, err = c.Pipelined(ctx, func(p goredis.Pipeliner) error {
			for _, s := range res {
				ids := make([]string, len(s.Messages))
				for i, m := range s.Messages {
					ids[i] = m.ID
				}
				got += len(ids)
				p.XAck(ctx, s.Stream, "raw", ids...)
				p.XDel(ctx, s.Stream, ids...)
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	elapsed := time.Since(start)
	wg.Wait()
	b.StopTimer()
	return float64(n) / elapsed.Seconds()
}
