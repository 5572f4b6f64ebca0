// Package bench measures postbox against raw references taken in the same
// run on the same disk: go test -run '^$' -bench . -benchtime 1x ./bench/
package bench

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/postbox-dev/postbox/actorhost"
	"github.com/postbox-dev/postbox/actors/counter"
	"github.com/postbox-dev/postbox/channel"
	chsqlite "github.com/postbox-dev/postbox/channel/sqlite"
	"github.com/postbox-dev/postbox/internal/entry"
	"github.com/postbox-dev/postbox/internal/sqlitedb"
	"github.com/postbox-dev/postbox/journal"
	jsqlite "github.com/postbox-dev/postbox/journal/sqlite"
)

// rawInsertRate is the reference: rows/s of batched INSERTs, 500 rows per
// transaction, into a fresh WAL table with synchronous=FULL, 200-byte
// payloads, 1,000 actors round-robin.
func rawInsertRate(b *testing.B, dir string, rows int) float64 {
	b.Helper()
	db, err := sqlitedb.Open(filepath.Join(dir, "raw.db"), sqlitedb.Options{Synchronous: sqlitedb.SyncFull})
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(`CREATE TABLE raw (actor TEXT, seq INTEGER, kind INTEGER, msg_id TEXT, payload BLOB,
		PRIMARY KEY(actor, seq)) WITHOUT ROWID`); err != nil {
		b.Fatal(err)
	}
	payload := make([]byte, 200)
	rand.Read(payload)
	seqs := make([]int64, 1000)
	start := time.Now()
	for done := 0; done < rows; {
		tx, err := db.Begin()
		if err != nil {
			b.Fatal(err)
		}
		stmt, err := tx.Prepare(`INSERT INTO raw VALUES (?, ?, ?, ?, ?)`)
		if err != nil {
			b.Fatal(err)
		}
		for i := 0; i < 500 && done < rows; i++ {
			a := done % 1000
			seqs[a]++
			if _, err := stmt.Exec(fmt.Sprintf("counter/%d", a), seqs[a], 3, fmt.Sprintf("m-%d", done), payload); err != nil {
				b.Fatal(err)
			}
			done++
		}
		stmt.Close()
		if err := tx.Commit(); err != nil {
			b.Fatal(err)
		}
	}
	return float64(rows) / time.Since(start).Seconds()
}

// pipeline publishes msgs, runs a host over them until every one is
// journaled, and returns msgs/s from host start to the last completion.
func pipeline(b *testing.B, dir string, reg *actorhost.Registry, partitions int, msgs []channel.Message, cfg actorhost.Config) (float64, actorhost.Stats) {
	b.Helper()
	mb, err := chsqlite.Open(filepath.Join(dir, "mailbox.db"), chsqlite.Options{Partitions: partitions})
	if err != nil {
		b.Fatal(err)
	}
	defer mb.Close()
	publish(b, mb.Publisher(), msgs)
	j, err := jsqlite.Open(filepath.Join(dir, "journal.db"), jsqlite.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer j.Close()
	cfg.Registry, cfg.Journal, cfg.DeadLetters = reg, j, mb.DLQ()
	cfg.Consumer = mb.Consumer(chsqlite.ConsumerOptions{})
	return runHost(b, cfg, len(msgs))
}

// publish publishes msgs, 1,000 at a time.
func publish(b *testing.B, p channel.Publisher, msgs []channel.Message) {
	b.Helper()
	for i := 0; i < len(msgs); i += 1000 {
		if err := p.Publish(context.Background(), msgs[i:min(i+1000, len(msgs))]...); err != nil {
			b.Fatal(err)
		}
	}
}

// runHost runs a host of cfg until it has processed n messages, stops it,
// and returns msgs/s from its start to the last completion, and its stats.
func runHost(b *testing.B, cfg actorhost.Config, n int) (float64, actorhost.Stats) {
	b.Helper()
	ctx := context.Background()
	h, err := actorhost.New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	if err := h.Start(ctx); err != nil {
		b.Fatal(err)
	}
	deadline := start.Add(10 * time.Minute)
	for h.Stats().Processed < int64(n) {
		if time.Now().After(deadline) {
			b.Fatalf("pipeline stuck at %d of %d", h.Stats().Processed, n)
		}
		time.Sleep(2 * time.Millisecond)
	}
	elapsed := time.Since(start)
	st := h.Stats()
	stop, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := h.Stop(stop); err != nil {
		b.Fatal(err)
	}
	return float64(n) / elapsed.Seconds(), st
}

func counterMessages(actors, count int) []channel.Message {
	msgs := make([]channel.Message, count)
	for i := range msgs {
		msgs[i] = channel.Message{
			ID:      fmt.Sprintf("m-%d", i),
			Address: channel.Address{Type: counter.Type, ID: fmt.Sprint(i % actors)},
			Payload: []byte(`{"add":1}`),
		}
	}
	return msgs
}

// BenchmarkSQLitePipeline: 100k preloaded messages for 1,000 counters, one
// side effect each, checkpoints every 100, synchronous=FULL, against the raw
// insert reference.
func BenchmarkSQLitePipeline(b *testing.B) {
	const actors, count = 1000, 100_000
	var rate, raw float64
	for range b.N {
		dir := b.TempDir()
		raw = rawInsertRate(b, dir, count)
		reg := actorhost.NewRegistry()
		counter.Register(reg, nil)
		var st actorhost.Stats
		rate, st = pipeline(b, dir, reg, 8, counterMessages(actors, count), actorhost.Config{
			Concurrency: 1000, CheckpointEvery: 100, MaxActors: 2000,
		})
		if st.Processed != count || st.DeadLettered != 0 {
			b.Fatalf("stats %+v", st)
		}
	}
	b.ReportMetric(rate, "msgs/s")
	b.ReportMetric(raw, "raw_rows/s")
	b.ReportMetric(rate/raw, "raw_ratio")
}

// BenchmarkRecovery: one actor with 100k journaled messages, activated from
// its newest checkpoint (written every 100) versus by full replay.
func BenchmarkRecovery(b *testing.B) {
	const n = 100_000
	ctx := context.Background()
	dir := b.TempDir()
	j, err := jsqlite.Open(filepath.Join(dir, "journal.db"), jsqlite.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer j.Close()
	reg := actorhost.NewRegistry()
	counter.Register(reg, nil)
	addr := channel.Address{Type: counter.Type, ID: "big"}
	writeHistory(b, j, addr, n, 100)

	var withCP, full actorhost.Replayed
	b.ResetTimer()
	for range b.N {
		withCP, err = reg.Replay(ctx, j, addr, actorhost.ReplayOptions{})
		if err != nil {
			b.Fatal(err)
		}
		full, err = reg.Replay(ctx, j, addr, actorhost.ReplayOptions{IgnoreCheckpoints: true})
		if err != nil {
			b.Fatal(err)
		}
	}
	if string(withCP.State) != string(full.State) || full.Messages != n {
		b.Fatalf("checkpoint %s vs full %s (%d messages)", withCP.State, full.State, full.Messages)
	}
	b.ReportMetric(float64(withCP.Duration.Microseconds()), "checkpoint_us")
	b.ReportMetric(float64(full.Duration.Milliseconds()), "full_ms")
	b.ReportMetric(full.Duration.Seconds()/withCP.Duration.Seconds(), "speedup")
	b.ReportMetric(float64(full.Seq)/full.Duration.Seconds(), "replay_entries/s")
}

// writeHistory journals n completed counter messages for addr, each with
// its side effect, as a host writes them, checkpointing every cpEvery.
func writeHistory(b *testing.B, j journal.Journal, addr channel.Address, n, cpEvery int) {
	b.Helper()
	key := addr.String()
	var batch journal.Batch
	var seq, value int64
	at := time.Now()
	for i := range n {
		id := fmt.Sprintf("h-%d", i)
		value++
		seq++
		batch.Entries = append(batch.Entries, journal.Entry{Actor: key, Seq: seq, Kind: journal.KindEffect, MsgID: id,
			Data: entry.Encode(entry.Effect{Index: 0, Name: "notify", Result: []byte(fmt.Sprint(value))})})
		seq++
		batch.Entries = append(batch.Entries, journal.Entry{Actor: key, Seq: seq, Kind: journal.KindComplete, MsgID: id,
			Data: entry.Encode(entry.Complete{N: 1, At: at, Payload: []byte(`{"add":1}`)})})
		if (i+1)%cpEvery == 0 {
			state, _ := json.Marshal(counter.State{Value: value, Applied: value})
			batch.Checkpoints = append(batch.Checkpoints, journal.Checkpoint{Actor: key, Seq: seq, State: state})
		}
		if len(batch.Entries) >= 5000 || i == n-1 {
			batch.Partition = "bench"
			if err := j.Append(context.Background(), batch); err != nil {
				b.Fatal(err)
			}
			batch = journal.Batch{}
		}
	}
}

// sleeper is an actor whose one side effect takes 2 ms, like a call to a
// remote service.
type sleeper struct{ Calls int }

func sleeperRegistry() *actorhost.Registry {
	reg := actorhost.NewRegistry()
	actorhost.Register(reg, "sleeper", func(ctx *actorhost.Context, s *sleeper, m actorhost.Message) error {
		_, err := ctx.SideEffect("call", func(context.Context, string) ([]byte, error) {
			time.Sleep(2 * time.Millisecond)
			return nil, nil
		})
		s.Calls++
		return err
	})
	return reg
}

func sleeperMessages(actors, count int) []channel.Message {
	msgs := make([]channel.Message, count)
	for i := range msgs {
		msgs[i] = channel.Message{ID: fmt.Sprintf("s-%d", i), Address: channel.Address{Type: "sleeper", ID: fmt.Sprint(i % actors)}}
	}
	return msgs
}

// BenchmarkKeyConcurrency: one partition, 1,000 actors, a side effect that
// sleeps 2 ms; throughput at concurrency 64 against concurrency 1.
func BenchmarkKeyConcurrency(b *testing.B) {
	var serial, parallel float64
	for range b.N {
		serial, _ = pipeline(b, b.TempDir(), sleeperRegistry(), 1, sleeperMessages(1000, 1000), actorhost.Config{Concurrency: 1})
		parallel, _ = pipeline(b, b.TempDir(), sleeperRegistry(), 1, sleeperMessages(1000, 20000), actorhost.Config{Concurrency: 64})
	}
	b.ReportMetric(serial, "c1_msgs/s")
	b.ReportMetric(parallel, "c64_msgs/s")
	b.ReportMetric(parallel/serial, "speedup")
}
