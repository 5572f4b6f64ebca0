package redis_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/postbox-dev/postbox/journal"
	"github.com/postbox-dev/postbox/journal/redis"
)

// BenchmarkAppend measures group commit against REDIS_ADDR: each op is one
// Append of one entry for each of N actors, spread over 16 partitions with
// their epochs acquired, half attempts and half completions. It reports
// rows/s (entries written per second) and appends/s (Append calls per
// second). With appendfsync always each Append costs one fsync.
func BenchmarkAppend(b *testing.B) {
	for _, actors := range []int{1000, 10} {
		b.Run(fmt.Sprintf("actors=%d", actors), func(b *testing.B) { benchAppend(b, actors) })
	}
}

func benchAppend(b *testing.B, nActors int) {
	ctx := context.Background()
	j := mustOpen(b, redis.Options{Namespace: freshNamespace(b)})
	actors := make([]string, nActors)
	for i := range actors {
		actors[i] = fmt.Sprintf("counter/%d", i)
	}
	batches := make([]journal.Batch, min(16, nActors))
	for p := range batches {
		name := fmt.Sprintf("p%d", p)
		e, err := journal.AcquireEpoch(ctx, j, name)
		if err != nil {
			b.Fatal(err)
		}
		batches[p] = journal.Batch{Partition: name, Epoch: e}
	}
	data := make([]byte, 200)
	kinds := []journal.Kind{journal.KindAttempt, journal.KindComplete}

	var elapsed time.Duration
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		for p := range batches {
			batches[p].Entries = batches[p].Entries[:0]
		}
		msg := fmt.Sprintf("m%d", i/2)
		for a, actor := range actors {
			p := &batches[a%len(batches)]
			p.Entries = append(p.Entries, journal.Entry{Actor: actor, Seq: int64(i + 1), Kind: kinds[i%2], MsgID: msg, Data: data})
		}
		start := time.Now()
		if err := j.Append(ctx, batches...); err != nil {
			b.Fatal(err)
		}
		elapsed += time.Since(start)
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N*nActors)/elapsed.Seconds(), "rows/s")
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "appends/s")
}
