package bench

// Kafka benchmarks: the postbox Kafka consumer feeding an actor host with a
// SQLite journal (synchronous=FULL), against raw references measured in the
// same run. They need a broker:
//
//	KAFKA_PORT=29092 KAFKA_DATA_DIR=/tmp/kafka-bench scripts/kafka.sh start
//	KAFKA_BROKERS=127.0.0.1:29092 go test -run '^$' -bench Kafka -benchtime 1x ./bench/
//
// Without KAFKA_BROKERS they skip. Each run creates its own topics (and
// consumer groups) and deletes the topics afterwards.
//
// Optional knobs, to compare host configurations without editing the file:
// POSTBOX_BENCH_CONCURRENCY (actorhost Concurrency) and
// POSTBOX_BENCH_KAFKA_BUFFER (kafka Options.BufferSize per partition).

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/postbox-dev/postbox/actorhost"
	"github.com/postbox-dev/postbox/actors/counter"
	"github.com/postbox-dev/postbox/channel"
	"github.com/postbox-dev/postbox/channel/kafka"
	"github.com/postbox-dev/postbox/internal/testenv"
	"github.com/postbox-dev/postbox/journal"
	jsqlite "github.com/postbox-dev/postbox/journal/sqlite"
)

const (
	kafkaPartitions = 12
	kafkaActors     = 1000

	// The best host configuration found on the reference machine (2 cores,
	// 1,000 actors): one worker per actor, so that every actor with work
	// can wait on a group commit at once and commits are as large as they
	// get. The Kafka buffer made no difference beyond noise (the host pulls
	// the backlog into its own queues), so it stays at the library default.
	// See the package comment for how to try others.
	defaultKafkaConcurrency = 1000
	defaultKafkaBuffer      = 512
)

// envInt reads an optional positive integer knob.
func envInt(b *testing.B, name string, def int) int {
	b.Helper()
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	v, err := strconv.Atoi(s)
	if err != nil || v < 1 {
		b.Fatalf("%s=%q: want a positive integer", name, s)
	}
	return v
}

// benchTopic creates a fresh mailbox topic (and its DLQ topic) and deletes
// both when the benchmark ends.
func benchTopic(b *testing.B, brokers []string) string {
	b.Helper()
	var r [4]byte
	rand.Read(r[:])
	topic := "postbox-bench." + strings.ReplaceAll(b.Name(), "/", ".") + "." + hex.EncodeToString(r[:])
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := kafka.EnsureTopics(ctx, brokers, topic, kafkaPartitions, 1); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
		if err != nil {
			return
		}
		defer cl.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		kadm.NewClient(cl).DeleteTopics(ctx, topic, kafka.DLQTopic(topic))
	})
	return topic
}

// stampConsumer records when its first claim arrives (the group has
// assigned partitions) and how many claims arrived. With onDeliver set, it
// also passes each claim's messages through a goroutine that calls
// onDeliver as the host takes each one.
type stampConsumer struct {
	channel.Consumer
	first     atomic.Int64 // unix nanos
	claims    atomic.Int64
	onDeliver func(channel.Message)
}

func (s *stampConsumer) Run(ctx context.Context, onClaim func(channel.Claim)) error {
	return s.Consumer.Run(ctx, func(c channel.Claim) {
		s.first.CompareAndSwap(0, time.Now().UnixNano())
		s.claims.Add(1)
		if s.onDeliver == nil {
			onClaim(c)
			return
		}
		sc := &stampClaim{Claim: c, out: make(chan channel.Message)}
		go func() {
			defer close(sc.out)
			for m := range c.Messages() {
				select {
				case sc.out <- m:
					s.onDeliver(m)
				case <-ctx.Done():
					return
				}
			}
		}()
		onClaim(sc)
	})
}

type stampClaim struct {
	channel.Claim
	out chan channel.Message
}

func (c *stampClaim) Messages() <-chan channel.Message { return c.out }

// kafkaHost is a host consuming topic with the postbox Kafka consumer, a
// SQLite journal with synchronous=FULL in dir and the Kafka DLQ.
type kafkaHost struct {
	h        *actorhost.Host
	consumer *stampConsumer
	prom     *prometheus.Registry
}

func startKafkaHost(b *testing.B, brokers []string, topic, dir string, wrap func(journal.Journal) journal.Journal, onDeliver func(channel.Message)) *kafkaHost {
	b.Helper()
	kopts := kafka.Options{
		Group:      "postbox-bench." + topic,
		BufferSize: envInt(b, "POSTBOX_BENCH_KAFKA_BUFFER", defaultKafkaBuffer),
	}
	kc, err := kafka.OpenConsumer(brokers, topic, kopts)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { kc.Close() })
	dl, err := kafka.OpenDLQ(brokers, topic, kopts)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { dl.Close() })
	j, err := jsqlite.Open(filepath.Join(dir, "journal.db"), jsqlite.Options{Synchronous: jsqlite.SyncFull})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { j.Close() })
	var jj journal.Journal = j
	if wrap != nil {
		jj = wrap(j)
	}
	reg := actorhost.NewRegistry()
	counter.Register(reg, nil)
	kh := &kafkaHost{consumer: &stampConsumer{Consumer: kc, onDeliver: onDeliver}, prom: prometheus.NewRegistry()}
	kh.h, err = actorhost.New(actorhost.Config{
		Registry: reg, Consumer: kh.consumer, Journal: jj, DeadLetters: dl,
		Metrics:         kh.prom,
		Concurrency:     envInt(b, "POSTBOX_BENCH_CONCURRENCY", defaultKafkaConcurrency),
		CheckpointEvery: 100, MaxActors: 2 * kafkaActors,
	})
	if err != nil {
		b.Fatal(err)
	}
	if err := kh.h.Start(context.Background()); err != nil {
		b.Fatal(err)
	}
	return kh
}

func (kh *kafkaHost) stop(b *testing.B) {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := kh.h.Stop(ctx); err != nil {
		b.Fatal(err)
	}
}

// flushStats returns the mean entries per group commit and the mean time
// one took.
func (kh *kafkaHost) flushStats(b *testing.B) (entries, ms float64) {
	b.Helper()
	mfs, err := kh.prom.Gather()
	if err != nil {
		b.Fatal(err)
	}
	for _, mf := range mfs {
		if len(mf.GetMetric()) == 0 {
			continue
		}
		h := mf.GetMetric()[0].GetHistogram()
		if h.GetSampleCount() == 0 {
			continue
		}
		mean := h.GetSampleSum() / float64(h.GetSampleCount())
		switch mf.GetName() {
		case "postbox_journal_flush_entries":
			entries = mean
		case "postbox_journal_flush_duration_seconds":
			ms = mean * 1000
		}
	}
	return entries, ms
}

// publishKafka preloads msgs with the postbox Kafka publisher.
func publishKafka(b *testing.B, brokers []string, topic string, msgs []channel.Message) {
	b.Helper()
	pub, err := kafka.OpenPublisher(brokers, topic, kafka.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer pub.Close()
	ctx := context.Background()
	for i := 0; i < len(msgs); i += 5000 {
		if err := pub.Publish(ctx, msgs[i:min(i+5000, len(msgs))]...); err != nil {
			b.Fatal(err)
		}
	}
}

// rawConsumeRate is the Kafka reference: records/s of a plain franz-go
// group consumer reading every record of topic from the start, doing no
// work, and committing synchronously after every poll; timed from the
// group's assignment to the last commit, like the pipeline.
func rawConsumeRate(b *testing.B, brokers []string, topic string, want int) float64 {
	b.Helper()
	var assigned atomic.Int64
	cl, err := kgo.NewClient(
		kgo.SeedBrokers(brokers...),
		kgo.ConsumerGroup("postbox-bench.raw."+topic),
		kgo.ConsumeTopics(topic),
		kgo.DisableAutoCommit(),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), // as the postbox consumer
		kgo.OnPartitionsAssigned(func(context.Context, *kgo.Client, map[string][]int32) {
			assigned.CompareAndSwap(0, time.Now().UnixNano())
		}),
	)
	if err != nil {
		b.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	got := 0
	for got < want {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			b.Fatalf("raw consumer stuck at %d of %d records: %v", got, want, err)
		}
		var ferr error
		fs.EachError(func(_ string, p int32, err error) { ferr = fmt.Errorf("partition %d: %w", p, err) })
		if ferr != nil {
			b.Fatal(ferr)
		}
		rs := fs.Records()
		if len(rs) == 0 {
			continue
		}
		got += len(rs)
		if err := cl.CommitRecords(ctx, rs...); err != nil {
			b.Fatal(err)
		}
	}
	return float64(got) / time.Since(time.Unix(0, assigned.Load())).Seconds()
}

func mkdir(b *testing.B, parent, name string) string {
	b.Helper()
	dir := filepath.Join(parent, name)
	if err := os.Mkdir(dir, 0o755); err != nil {
		b.Fatal(err)
	}
	return dir
}

// BenchmarkKafkaPipeline: 200k messages for 1,000 counters preloaded on a
// 12-partition topic, consumed by one host (Kafka consumer, SQLite journal
// with synchronous=FULL, one side effect per message, checkpoints every
// 100). msgs/s is timed from the group's assignment to the last
// completion. raw_ratio divides it by the lower of two references taken in
// the same run: a raw franz-go consume of the same records with a commit
// per poll (raw_consume/s), and batched journal-row INSERTs into SQLite
// (raw_rows/s, rawInsertRate; the mean of one run before the pipeline and
// one after, as other load on the machine drifts).
//
// Diagnostics: entries/flush and flush_ms are the mean size and duration of
// the host's group commits; join_ms is from Start to the first partition
// assigned; peak_inflight is the most messages the host held at once
// (delivered, not yet acked).
func BenchmarkKafkaPipeline(b *testing.B) {
	brokers := testenv.Kafka(b)
	const count = 200_000
	var rate, rawConsume, rawRows, flushEntries, flushMS, joinMS, peak float64
	for range b.N {
		topic := benchTopic(b, brokers)
		dir := b.TempDir()
		publishKafka(b, brokers, topic, counterMessages(kafkaActors, count))

		rawConsume = rawConsumeRate(b, brokers, topic, count)
		before := rawInsertRate(b, mkdir(b, dir, "raw-before"), count)

		start := time.Now()
		kh := startKafkaHost(b, brokers, topic, dir, nil, nil)
		deadline := start.Add(10 * time.Minute)
		peak = 0
		for {
			st := kh.h.Stats()
			peak = max(peak, float64(st.InFlight))
			if st.Processed >= count {
				break
			}
			if time.Now().After(deadline) {
				b.Fatalf("pipeline stuck at %d of %d", st.Processed, count)
			}
			time.Sleep(time.Millisecond)
		}
		end := time.Now()
		first := time.Unix(0, kh.consumer.first.Load())
		rate = count / end.Sub(first).Seconds()
		joinMS = float64(first.Sub(start).Milliseconds())
		flushEntries, flushMS = kh.flushStats(b)
		st := kh.h.Stats()
		kh.stop(b)
		if st.Processed != count || st.DeadLettered != 0 {
			b.Fatalf("stats %+v", st)
		}
		// Other load on the machine drifts: take the journal reference on
		// both sides of the pipeline.
		after := rawInsertRate(b, mkdir(b, dir, "raw-after"), count)
		rawRows = (before + after) / 2
	}
	b.ReportMetric(rate, "msgs/s")
	b.ReportMetric(rawConsume, "raw_consume/s")
	b.ReportMetric(rawRows, "raw_rows/s")
	b.ReportMetric(rate/min(rawConsume, rawRows), "raw_ratio")
	b.ReportMetric(flushEntries, "entries/flush")
	b.ReportMetric(flushMS, "flush_ms")
	b.ReportMetric(joinMS, "join_ms")
	b.ReportMetric(peak, "peak_inflight")
}

// completionClock is a journal that records when each completion entry
// became durable: the moment the Append holding it returned. Message IDs
// are "<prefix><index>".
type completionClock struct {
	journal.Journal
	prefix string
	at     []atomic.Int64 // unix nanos, by message index
	n      atomic.Int64   // completions recorded

	mu    sync.Mutex
	took  []float64 // ms per Append (group commit)
	since time.Time // record Append durations from here on
}

func (c *completionClock) Append(ctx context.Context, batches ...journal.Batch) error {
	start := time.Now()
	err := c.Journal.Append(ctx, batches...)
	done := time.Now()
	c.mu.Lock()
	if !c.since.IsZero() && start.After(c.since) {
		c.took = append(c.took, float64(done.Sub(start).Microseconds())/1000)
	}
	c.mu.Unlock()
	if err != nil {
		// A fenced batch was not written; nothing is fenced in this run,
		// so report nothing for any batch.
		return err
	}
	now := done.UnixNano()
	for _, bt := range batches {
		for _, e := range bt.Entries {
			if e.Kind != journal.KindComplete {
				continue
			}
			if i, ok := msgIndex(e.MsgID, c.prefix, len(c.at)); ok && c.at[i].CompareAndSwap(0, now) {
				c.n.Add(1)
			}
		}
	}
	return err
}

// msgIndex parses i out of the message ID prefix+i, for 0 <= i < n.
func msgIndex(id, prefix string, n int) (int, bool) {
	if !strings.HasPrefix(id, prefix) {
		return 0, false
	}
	i, err := strconv.Atoi(id[len(prefix):])
	return i, err == nil && i >= 0 && i < n
}

// BenchmarkKafkaLatency: a running host (as in BenchmarkKafkaPipeline,
// warmed up with one message per counter) receives 2,000 msgs/s for 10 s
// from the postbox Kafka publisher, in batches of 10 every 5 ms. Latency
// is from the Publish call to the moment the journal Append holding the
// message's completion returned (durable with synchronous=FULL). The host
// acks after that; the ack is not included.
//
// The latency splits into publish_* (Publish called → acknowledged by the
// broker), delivered_* (Publish called → handed to the host by the
// consumer) and host_* (handed to the host → completion durable). append_*
// are the durations of the host's group commits during the run, and
// appends_over_50ms how many took 50 ms or more.
func BenchmarkKafkaLatency(b *testing.B) {
	brokers := testenv.Kafka(b)
	const (
		perSecond = 2000
		seconds   = 10
		batch     = 10
		count     = perSecond * seconds
		interval  = time.Second * batch / perSecond
		prefix    = "lat-"
	)
	var p50, p99, pmax, pubP50, pubP99, delP50, delP99, hostP50, hostP99, appendP99, appendMax, slow, achieved, flushEntries, flushMS float64
	for range b.N {
		topic := benchTopic(b, brokers)
		clock := &completionClock{prefix: prefix, at: make([]atomic.Int64, count)}
		delivered := make([]atomic.Int64, count) // handed to the host
		kh := startKafkaHost(b, brokers, topic, b.TempDir(), func(j journal.Journal) journal.Journal {
			clock.Journal = j
			return clock
		}, func(m channel.Message) {
			if i, ok := msgIndex(m.ID, prefix, count); ok {
				delivered[i].CompareAndSwap(0, time.Now().UnixNano())
			}
		})

		// Warm up: wait for every partition, then activate every counter.
		ctx := context.Background()
		for kh.consumer.claims.Load() < kafkaPartitions {
			time.Sleep(10 * time.Millisecond)
		}
		warm := make([]channel.Message, kafkaActors)
		for i := range warm {
			warm[i] = channel.Message{ID: fmt.Sprintf("warm-%d", i),
				Address: channel.Address{Type: counter.Type, ID: fmt.Sprint(i)}, Payload: []byte(`{"add":1}`)}
		}
		publishKafka(b, brokers, topic, warm)
		for kh.h.Stats().Processed < kafkaActors {
			time.Sleep(10 * time.Millisecond)
		}

		msgs := make([]channel.Message, count)
		for i := range msgs {
			msgs[i] = channel.Message{ID: fmt.Sprintf("%s%d", prefix, i),
				Address: channel.Address{Type: counter.Type, ID: fmt.Sprint(i % kafkaActors)}, Payload: []byte(`{"add":1}`)}
		}
		pub, err := kafka.OpenPublisher(brokers, topic, kafka.Options{})
		if err != nil {
			b.Fatal(err)
		}
		// Connect before the clock starts.
		if err := pub.Publish(ctx, channel.Message{ID: "warm-pub", Address: channel.Address{Type: counter.Type, ID: "0"},
			Payload: []byte(`{"add":1}`)}); err != nil {
			b.Fatal(err)
		}
		clock.mu.Lock()
		clock.since = time.Now()
		clock.mu.Unlock()
		sent := make([]int64, count)  // Publish called
		acked := make([]int64, count) // Publish returned
		var wg sync.WaitGroup
		var pubErr atomic.Pointer[error]
		start := time.Now()
		for k := 0; k*batch < count; k++ {
			time.Sleep(time.Until(start.Add(time.Duration(k) * interval)))
			lo, hi := k*batch, min(k*batch+batch, count)
			t0 := time.Now().UnixNano()
			for i := lo; i < hi; i++ {
				sent[i] = t0
			}
			wg.Go(func() {
				if err := pub.Publish(ctx, msgs[lo:hi]...); err != nil {
					pubErr.Store(&err)
				}
				t1 := time.Now().UnixNano()
				for i := lo; i < hi; i++ {
					acked[i] = t1
				}
			})
		}
		publishing := time.Since(start)
		wg.Wait()
		pub.Close()
		if e := pubErr.Load(); e != nil {
			b.Fatal(*e)
		}
		deadline := time.Now().Add(2 * time.Minute)
		for clock.n.Load() < count {
			if time.Now().After(deadline) {
				b.Fatalf("only %d of %d completions journaled", clock.n.Load(), count)
			}
			time.Sleep(5 * time.Millisecond)
		}
		flushEntries, flushMS = kh.flushStats(b)
		kh.stop(b)

		lat := make([]float64, count)     // Publish called → completion durable
		pubLat := make([]float64, count)  // Publish called → Publish returned
		delLat := make([]float64, count)  // Publish called → handed to the host
		hostLat := make([]float64, count) // handed to the host → completion durable
		for i := range lat {
			lat[i] = float64(clock.at[i].Load()-sent[i]) / 1e6
			pubLat[i] = float64(acked[i]-sent[i]) / 1e6
			delLat[i] = float64(delivered[i].Load()-sent[i]) / 1e6
			hostLat[i] = float64(clock.at[i].Load()-delivered[i].Load()) / 1e6
		}
		clock.mu.Lock()
		took := clock.took
		clock.mu.Unlock()
		for _, l := range [][]float64{lat, pubLat, delLat, hostLat, took} {
			slices.Sort(l)
		}
		p50, p99, pmax = quantile(lat, 0.50), quantile(lat, 0.99), lat[len(lat)-1]
		pubP50, pubP99 = quantile(pubLat, 0.50), quantile(pubLat, 0.99)
		delP50, delP99 = quantile(delLat, 0.50), quantile(delLat, 0.99)
		hostP50, hostP99 = quantile(hostLat, 0.50), quantile(hostLat, 0.99)
		appendP99, appendMax = quantile(took, 0.99), took[len(took)-1]
		slow = 0
		for _, t := range took {
			if t >= 50 {
				slow++
			}
		}
		achieved = count / publishing.Seconds()
	}
	b.ReportMetric(p50, "p50_ms")
	b.ReportMetric(p99, "p99_ms")
	b.ReportMetric(pmax, "max_ms")
	b.ReportMetric(pubP50, "publish_p50_ms")
	b.ReportMetric(pubP99, "publish_p99_ms")
	b.ReportMetric(delP50, "delivered_p50_ms")
	b.ReportMetric(delP99, "delivered_p99_ms")
	b.ReportMetric(hostP50, "host_p50_ms")
	b.ReportMetric(hostP99, "host_p99_ms")
	b.ReportMetric(appendP99, "append_p99_ms")
	b.ReportMetric(appendMax, "append_max_ms")
	b.ReportMetric(slow, "appends_over_50ms")
	b.ReportMetric(achieved, "sent_msgs/s")
	b.ReportMetric(flushEntries, "entries/flush")
	b.ReportMetric(flushMS, "flush_ms")
}

// quantile of sorted values, nearest rank.
func quantile(sorted []float64, q float64) float64 {
	i := int(q*float64(len(sorted))+0.5) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}
