//go:build unix

package sqlite_test

import (
	"fmt"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/postbox-dev/postbox/channel"
	"github.com/postbox-dev/postbox/channel/internal/backendtest"
	"github.com/postbox-dev/postbox/channel/sqlite"
)

// benchBatch is how many messages one Publish call carries, unless a
// benchmark says otherwise.
const benchBatch = 100

func benchPublish(b *testing.B, pub channel.Publisher, n int) {
	backendtest.PublishBatches(b, pub, n, benchBatch)
}

// benchConsume acks n messages one by one, as a host does.
func benchConsume(b *testing.B, mb *sqlite.Mailbox, n int64) {
	backendtest.ConsumeAcking(b, mb.Consumer(sqlite.ConsumerOptions{}), int(n))
}

func openBench(b *testing.B) *sqlite.Mailbox {
	mb, err := sqlite.Open(filepath.Join(b.TempDir(), "bench.db"), sqlite.Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { mb.Close() })
	return mb
}

// cpuTime is the CPU time the process has used, user and system.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// meter measures a benchmark's wall and CPU time. On a shared machine the
// CPU time per message is the steadier figure.
type meter struct {
	wall time.Time
	cpu  time.Duration
}

func startMeter() meter { return meter{time.Now(), cpuTime()} }

func (m meter) report(b *testing.B) {
	b.ReportMetric(float64(b.N)/time.Since(m.wall).Seconds(), "msgs/s")
	b.ReportMetric(float64((cpuTime()-m.cpu).Microseconds())/float64(b.N), "cpu-µs/msg")
}

// BenchmarkPublish publishes in batches of 100 with synchronous=FULL.
func BenchmarkPublish(b *testing.B) {
	mb := openBench(b)
	b.ResetTimer()
	m := startMeter()
	benchPublish(b, mb.Publisher(), b.N)
	m.report(b)
}

// BenchmarkPollAck consumes messages published beforehand: poll, deliver,
// ack one by one, delete.
func BenchmarkPollAck(b *testing.B) {
	mb := openBench(b)
	benchPublish(b, mb.Publisher(), b.N)
	b.ResetTimer()
	m := startMeter()
	benchConsume(b, mb, int64(b.N))
	m.report(b)
}

// BenchmarkPipeline publishes and consumes at once, as a producer and a
// worker sharing the file do: one or two publishers with batches of 100 or
// 1000 messages, against one consumer acking every message.
func BenchmarkPipeline(b *testing.B) {
	for _, tc := range []struct{ publishers, batch int }{{1, 100}, {2, 100}, {1, 1000}} {
		b.Run(fmt.Sprintf("publishers=%d/batch=%d", tc.publishers, tc.batch), func(b *testing.B) {
			mb := openBench(b)
			pub := mb.Publisher()
			b.ResetTimer()
			m := startMeter()
			var wg sync.WaitGroup
			per := b.N / tc.publishers
			for i := range tc.publishers {
				n := per
				if i == tc.publishers-1 {
					n = b.N - per*(tc.publishers-1)
				}
				wg.Go(func() { backendtest.PublishBatches(b, pub, n, tc.batch) })
			}
			benchConsume(b, mb, int64(b.N))
			wg.Wait()
			m.report(b)
		})
	}
}
