package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/postbox-dev/postbox/actorhost"
	"github.com/postbox-dev/postbox/actors/counter"
	"github.com/postbox-dev/postbox/actors/tally"
	"github.com/postbox-dev/postbox/channel"
	"github.com/postbox-dev/postbox/channel/kafka"
	"github.com/postbox-dev/postbox/dlq"
	"github.com/postbox-dev/postbox/internal/testenv"
	"github.com/postbox-dev/postbox/internal/waitfor"
	"github.com/postbox-dev/postbox/internal/workload"
	"github.com/postbox-dev/postbox/journal"
)

// End-to-end tests of the Kafka mailbox: real worker and producer binaries
// (and kcat) against the broker of KAFKA_BROKERS (TestKafkaBrokerRestart
// runs a broker of its own, as it restarts it). Each test has a topic of
// its own, created by its first worker (`worker run --partitions 12`), or
// in-process where kcat writes before any worker runs, and a journal of
// its own. A worker that is SIGKILLed or SIGSTOPped keeps its partitions
// until the group's session timeout (kafkaSessionTimeout) has passed. With
// POSTBOX_IT_KEEP set, each test's logs, journal and sink are kept and its
// topics are not deleted.

// TestKafkaScaleAndCrash: 200 counters, 50,000 messages published at a
// steady rate (with poison messages and messages that fail once) to a
// 12-partition topic. Workers share one journal: a SQLite file (several
// processes on one host), then PostgreSQL (the production pairing next to
// Kafka). One worker starts; it becomes
// three; one of the three is SIGKILLed and a new one started in its place;
// then two stop gracefully and one is left, all while the load goes on.
// At the end every counter's value and applied count must be exact (from
// the journal), every valid message must have made its side effect, extra
// side effects are bounded by kills × concurrency, the DLQ holds exactly
// the poison messages, and the group has committed every offset.
//
// The tally variant (PostgreSQL journal) has no side effect to journal, and
// gets every 7th message a second time, with its ID, later in the run.
func TestKafkaScaleAndCrash(t *testing.T) {
	brokers := kafkaBrokers(t)
	counterLoad := workload.Spec{Actors: 200, Count: 50000, Seed: 21, PoisonEvery: 250, FailEvery: 40}
	t.Run("sqlite-journal", func(t *testing.T) {
		dir := testDir(t)
		kafkaScaleAndCrash(t, brokers, dir, sqliteJournal(dir), counterLoad)
	})
	t.Run("postgres-journal", func(t *testing.T) {
		kafkaScaleAndCrash(t, brokers, testDir(t), postgresJournal(t), counterLoad)
	})
	t.Run("postgres-journal-tally-duplicates", func(t *testing.T) {
		kafkaScaleAndCrash(t, brokers, testDir(t), postgresJournal(t),
			workload.Spec{Type: tally.Type, Actors: 200, Count: 30000, Seed: 23, PoisonEvery: 250, DuplicateEvery: 7})
	})
}

func kafkaScaleAndCrash(t *testing.T, brokers, dir, journalURL string, spec workload.Spec) {
	const concurrency, kills = 16, 1
	l := newCheckedLoad(spec, 600)
	topic := kafkaTopic(t, brokers)
	mailbox := "kafka://" + brokers + "/" + topic
	sink := filepath.Join(dir, "sink.ndjson")
	w := workerArgs{mailbox: mailbox, journal: journalURL, sink: sink, concurrency: concurrency}
	begin := time.Now()
	elapsed := func() string { return time.Since(begin).Round(100 * time.Millisecond).String() }
	// Progress: the counter's side effects, or what live workers report.
	var live []*process
	admins := map[*process]string{}
	processed := func() int {
		if spec.Type != tally.Type {
			return sinkLines(sink)
		}
		var sum float64
		for _, p := range live {
			sum += processedOn(admins[p])
		}
		return int(sum)
	}
	start := func(name string, w workerArgs) *process {
		w.admin = testenv.FreeAddr(t)
		p := startWorker(t, dir, name, w)
		live = append(live, p)
		admins[p] = w.admin
		return p
	}

	first := w
	first.extra = []string{"--partitions", "12"}
	w1 := start("worker-1", first)
	w1.waitRunning(t, time.Minute)
	waitOwned(t, time.Minute, "worker-1 to own the 12 partitions", func() bool { return len(w1.owned()) == 12 }, w1)
	load := l.start(t, dir, mailbox)

	// 1 → 3 workers.
	waitfor.Until(t, time.Minute, "3,000 messages processed", func() bool { return processed() >= 3000 })
	w2 := start("worker-2", w)
	w3 := start("worker-3", w)
	waitOwned(t, 2*time.Minute, "the partitions to spread over three workers", func() bool {
		a, b, c := len(w1.owned()), len(w2.owned()), len(w3.owned())
		return a > 0 && b > 0 && c > 0 && a+b+c == 12
	}, w1, w2, w3)
	t.Logf("%s: three workers, partitions %s %s %s", elapsed(), partitionList(w1.owned()), partitionList(w2.owned()), partitionList(w3.owned()))

	// SIGKILL one of them under load, and start a new one.
	waitfor.Until(t, time.Minute, "8,000 messages processed", func() bool { return processed() >= 8000 })
	w2.kill(t)
	live = slices.DeleteFunc(live, func(p *process) bool { return p == w2 })
	killed := time.Now()
	t.Logf("%s: SIGKILLed worker-2 (it held %s), %d sink lines", elapsed(), partitionList(w2.owned()), sinkLines(sink))
	w4 := start("worker-4", w)
	waitOwned(t, 2*time.Minute, "worker-4 to take partitions once worker-2's session has expired", func() bool {
		a, c, d := len(w1.owned()), len(w3.owned()), len(w4.owned())
		return d > 0 && a+c+d == 12
	}, w1, w3, w4)
	t.Logf("%s: worker-4 holds %s, %s after the kill", elapsed(), partitionList(w4.owned()), time.Since(killed).Round(time.Second))

	// 3 → 1 worker, gracefully.
	loading := !load.exited()
	stopAll(t, time.Minute, w3, w4)
	waitOwned(t, time.Minute, "worker-1 to own the 12 partitions again", func() bool { return len(w1.owned()) == 12 }, w1)
	t.Logf("%s: back to one worker (load still running: %v)", elapsed(), loading)
	if !loading {
		t.Log("note: the load had finished before the scale-down; it happened on a backlog instead")
	}

	l.finish(t, dir, load, 3*time.Minute)
	t.Logf("%s: load published", elapsed())
	j := openJournal(t, journalURL)
	reg := l.waitSettled(t, j, mailbox)
	t.Logf("%s: every counter exact", elapsed())
	w1.stop(t, time.Minute)

	l.checkSettled(t, reg, j, brokers, topic, mailbox)
	extra := l.want.checkSink(t, sink, kills*concurrency)
	t.Logf("%s: %d valid messages, %d poison, %d kill(s) x concurrency %d: %d side effects ran twice",
		elapsed(), len(l.want.valid), len(l.want.poison), kills, concurrency, extra)
}

// TestKafkaZombieIsFenced: a worker is SIGSTOPped while busy (just after a
// journal write, so that it holds no journal lock) and stays stopped until
// the group has given its partitions to the other worker, which takes
// their epochs and processes them. Writes stamped with the stopped
// worker's epochs must now be refused by the journal (probed with a write
// of the test's own). Then it is SIGCONTed: it must give those partitions
// up (fenced on a refused write, or told by the group that it lost them),
// ack nothing it did not finish, rejoin the group as a healthy member, and
// every counter must come out exact. A fence it reports must show in its
// log and in postbox_partitions_fenced_total alike.
func TestKafkaZombieIsFenced(t *testing.T) {
	t.Parallel()
	brokers := kafkaBrokers(t)
	dir := testDir(t)
	journalPath := filepath.Join(dir, "journal.db")
	journalURL := "sqlite:" + journalPath
	// Published about as fast as two workers process it, so that the
	// zombie-to-be is busy when it is stopped.
	l := newCheckedLoad(workload.Spec{Actors: 100, Count: 30000, Seed: 5, PoisonEvery: 200, FailEvery: 50}, 1500)
	topic := kafkaTopic(t, brokers)
	mailbox := "kafka://" + brokers + "/" + topic
	sink := filepath.Join(dir, "sink.ndjson")
	begin := time.Now()
	elapsed := func() string { return time.Since(begin).Round(100 * time.Millisecond).String() }

	const zombieConcurrency = 16
	adminA, adminB := testenv.FreeAddr(t), testenv.FreeAddr(t)
	a := startWorker(t, dir, "worker-a", workerArgs{mailbox: mailbox, journal: journalURL, sink: sink,
		concurrency: zombieConcurrency, admin: adminA, extra: []string{"--partitions", "12"}})
	a.waitRunning(t, time.Minute)
	load := l.start(t, dir, mailbox)
	waitfor.Until(t, time.Minute, "1,000 messages processed", func() bool { return sinkLines(sink) >= 1000 })
	b := startWorker(t, dir, "worker-b", workerArgs{mailbox: mailbox, journal: journalURL, sink: sink,
		concurrency: 16, admin: adminB})
	waitOwned(t, 2*time.Minute, "the partitions to spread over both workers", func() bool {
		na, nb := len(a.owned()), len(b.owned())
		return na > 0 && nb > 0 && na+nb == 12
	}, a, b)
	waitfor.Every(t, time.Minute, 20*time.Millisecond, "worker-a to be busy", func() bool {
		v, _ := metric(adminA, "postbox_messages_in_flight")
		return v >= 20
	})

	aParts, aEpochs := a.owned(), a.claimEpochs()
	tries := stopBetweenJournalWrites(t, a, journalPath)
	stopped := time.Now()
	t.Logf("%s: SIGSTOPped worker-a (partitions %s) at try %d", elapsed(), partitionList(aParts), tries)
	waitOwned(t, 2*time.Minute, "worker-b to claim worker-a's partitions", func() bool { return len(b.owned()) == 12 }, b)
	t.Logf("%s: worker-b owns every partition, %s after the stop", elapsed(), time.Since(stopped).Round(time.Second))
	progress := sinkLines(sink)
	waitfor.Until(t, time.Minute, "worker-b to make progress", func() bool { return sinkLines(sink) >= progress+200 })

	// The zombie's epochs no longer write: a batch stamped with one is
	// refused. (The probe's actor is not a counter; were it written, the
	// test fails anyway.)
	j := openJournal(t, journalURL)
	for p := range aParts {
		key := fmt.Sprintf("kafka:%s/%d", topic, p)
		err := j.Append(context.Background(), journal.Batch{Partition: key, Epoch: aEpochs[p], Entries: []journal.Entry{{
			Actor: "probe/zombie", Seq: 1, Kind: journal.KindAttempt, MsgID: "probe", Data: []byte(`{}`),
		}}})
		if !journal.Fenced(err, key) {
			t.Errorf("a journal write to %s under worker-a's epoch %d: %v, want it fenced", key, aEpochs[p], err)
		}
	}

	fenceLines := func() int { return a.count("partition fenced by a newer owner") }
	if fenceLines() != 0 {
		t.Fatal("worker-a logged a fence before it was resumed")
	}
	claimsBefore := a.count("partition claimed")
	mark := len(a.logEntries())
	a.signal(t, syscall.SIGCONT)
	resumed := time.Now()
	// It gives up each of its old partitions: fenced by a refused write, or
	// told by the group that they are lost, whichever it learns first.
	gaveUp := func() (fenced, lost map[int32]bool) {
		fenced, lost = map[int32]bool{}, map[int32]bool{}
		for _, e := range a.logEntries()[mark:] {
			var key string
			var p int32
			switch {
			case strings.HasPrefix(e.Msg, "partition fenced by a newer owner") && json.Unmarshal(e.Partition, &key) == nil:
				if _, after, ok := strings.Cut(key, topic+"/"); ok {
					n, _ := strconv.Atoi(after)
					fenced[int32(n)] = true
				}
			case strings.HasPrefix(e.Msg, "partition lost") && json.Unmarshal(e.Partition, &p) == nil:
				lost[p] = true
			}
		}
		return fenced, lost
	}
	var fenced, lost map[int32]bool
	waitfor.Every(t, time.Minute, 50*time.Millisecond, "worker-a to give up its old partitions", func() bool {
		fenced, lost = gaveUp()
		for p := range aParts {
			if !fenced[p] && !lost[p] {
				return false
			}
		}
		return true
	})
	metricFenced, _ := metric(adminA, "postbox_partitions_fenced_total")
	t.Logf("%s: %s after SIGCONT, worker-a gave up partitions %s: fenced on a refused write %s, lost %s; postbox_partitions_fenced_total %v",
		elapsed(), time.Since(resumed).Round(time.Millisecond), partitionList(aParts), partitionList(fenced), partitionList(lost), metricFenced)
	// A write refused after the loss is still counted, a moment later: the
	// metric and the log lines must come to agree.
	var lines int
	waitfor.Every(t, 10*time.Second, 50*time.Millisecond, "the fence metric to match the fence log lines", func() bool {
		metricFenced, _ = metric(adminA, "postbox_partitions_fenced_total")
		lines = fenceLines()
		return float64(lines) == metricFenced
	})
	if lines > len(aParts) {
		t.Errorf("worker-a logged %d fences for %d partitions: each claim is fenced once", lines, len(aParts))
	}
	if len(fenced) == 0 {
		t.Log("note: worker-a learned it lost its partitions before it learned of a refused write")
	}
	waitOwned(t, 2*time.Minute, "worker-a to rejoin and claim partitions again", func() bool {
		return a.count("partition claimed") > claimsBefore && len(a.owned()) > 0 && len(a.owned())+len(b.owned()) == 12
	}, a, b)
	t.Logf("%s: worker-a rejoined with partitions %s", elapsed(), partitionList(a.owned()))

	l.finish(t, dir, load, 3*time.Minute)
	reg := l.waitSettled(t, j, mailbox)
	stopAll(t, time.Minute, a, b)
	l.checkSettled(t, reg, j, brokers, topic, mailbox)
	// A side effect runs again when a fence lands between its run and the
	// journal write of its result: the one in flight at the stop (rerun by
	// worker-b), and, after the resume, at most one per partition worker-a
	// still believed it owned before each was refused.
	bound := zombieConcurrency * (1 + len(aParts))
	extra := l.want.checkSink(t, sink, bound)
	t.Logf("%s: %d side effects ran twice (bound %d)", elapsed(), extra, bound)
}

// TestKafkaKcatInterop: records written by kcat (librdkafka), keyed
// counter/N and without headers, once placed by kcat's default partitioner
// (consistent_random: most land off their home partition and must be
// forwarded) and once by murmur2_random (Java-compatible: every record is
// home). A worker is SIGKILLed halfway, before the offsets of what it
// finished were committed, so a second worker gets those records again.
// Each record must be applied exactly once, under the ID of its original
// position, and in the order kcat sent it for its actor: the journal's
// completions (`worker journal counter/N`) must list them in that order.
func TestKafkaKcatInterop(t *testing.T) {
	brokers := kafkaBrokers(t)
	requireKcat(t)
	t.Run("default-partitioner", func(t *testing.T) {
		t.Parallel()
		kcatInterop(t, brokers, nil, true)
	})
	t.Run("murmur2_random", func(t *testing.T) {
		t.Parallel()
		kcatInterop(t, brokers, []string{"-X", "partitioner=murmur2_random"}, false)
	})
}

func kcatInterop(t *testing.T, brokers string, kcatArgs []string, offHome bool) {
	const actors, perActor, partitions = 20, 120, 12
	dir := testDir(t)
	topic := kafkaTopic(t, brokers)
	mailbox := "kafka://" + brokers + "/" + topic
	journalURL := sqliteJournal(dir)
	sink := filepath.Join(dir, "sink.ndjson")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := kafka.EnsureTopics(ctx, strings.Split(brokers, ","), topic, partitions, 1); err != nil {
		t.Fatal(err)
	}

	// Rounds of one record per actor, the actors in a shuffled order each
	// round; adds vary so that the values check something too.
	rng := rand.New(rand.NewPCG(3, 4))
	want := map[string]counter.State{}
	var in strings.Builder
	for k := range perActor {
		for _, a := range rng.Perm(actors) {
			addr := fmt.Sprintf("counter/%d", a)
			add := int64(rng.IntN(19) - 6)
			fmt.Fprintf(&in, "%s:{\"add\":%d,\"k\":%d}\n", addr, add, k)
			st := want[addr]
			st.Value += add
			st.Applied++
			want[addr] = st
		}
	}
	input := filepath.Join(dir, "records.txt")
	if err := os.WriteFile(input, []byte(in.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	args := append([]string{"-P", "-b", brokers, "-t", topic, "-K:", "-l"}, kcatArgs...)
	if out, err := exec.Command("kcat", append(args, input)...).CombinedOutput(); err != nil {
		t.Fatalf("kcat -P: %v\n%s", err, out)
	}

	// Where kcat put them, before any worker forwards copies.
	recs := kcatRecords(t, brokers, topic)
	if len(recs) != actors*perActor {
		t.Fatalf("kcat wrote %d records, want %d", len(recs), actors*perActor)
	}
	wantID := map[string]string{} // "addr k" → message ID
	home := 0
	for _, r := range recs {
		var v struct{ K int }
		if err := json.Unmarshal([]byte(r.value), &v); err != nil {
			t.Fatalf("kcat -C %s: value %q: %v", topic, r.value, err)
		}
		wantID[fmt.Sprintf("%s %d", r.key, v.K)] = fmt.Sprintf("%s/%d/%d", topic, r.partition, r.offset)
		if channel.HomePartition(r.key, partitions) == r.partition {
			home++
		}
	}
	t.Logf("kcat %v: %d of %d records on their home partition", kcatArgs, home, len(recs))
	if !offHome && home != len(recs) {
		t.Errorf("with murmur2_random, %d of %d records are off their home partition: postbox and librdkafka hash keys differently", len(recs)-home, len(recs))
	}
	if offHome && home > len(recs)/2 {
		t.Errorf("with kcat's default partitioner, %d of %d records are on their home partition: the forwarding path is hardly tested", home, len(recs))
	}

	w := workerArgs{mailbox: mailbox, journal: journalURL, sink: sink, concurrency: 2}
	w1 := startWorker(t, dir, "worker-1", w)
	waitfor.Until(t, 2*time.Minute, "a third of the records processed", func() bool { return sinkLines(sink) >= len(recs)/3 })
	w1.kill(t)
	t.Logf("SIGKILLed worker-1 after %d side effects", sinkLines(sink))
	w2 := startWorker(t, dir, "worker-2", w)
	j := openJournal(t, journalURL)
	reg := actorRegistry(t)
	waitfor.Every(t, 3*time.Minute, time.Second, "every counter exact", func() bool {
		return diffStates(context.Background(), reg, j, want).wrong == 0
	})
	w2.stop(t, time.Minute)
	st, ok := w2.stats()
	if !ok {
		t.Fatal(`worker-2 logged no "worker stopped" line`)
	}
	t.Logf("worker-2: processed %d, deduplicated %d", st.Processed, st.Deduplicated)
	if st.Deduplicated == 0 {
		t.Error("worker-2 deduplicated nothing: no record finished by worker-1 was delivered again, so the kill tested nothing")
	}
	if d := diffStates(context.Background(), reg, j, want); d.wrong != 0 {
		t.Errorf("%s", d)
	}

	// Exactly once and in order, per actor, under the original IDs.
	for a := range actors {
		addr := fmt.Sprintf("counter/%d", a)
		outs := journalOutcomes(t, journalURL, addr)
		if len(outs) != perActor {
			t.Errorf("%s: %d outcomes in the journal, want %d", addr, len(outs), perActor)
		}
		for i, o := range outs {
			var p struct{ K int }
			if o.kind != "complete" || json.Unmarshal(o.payload, &p) != nil {
				t.Errorf("%s: outcome %d is %s of %s (%s), want a completion", addr, i, o.kind, o.message, o.payload)
				break
			}
			if p.K != i {
				t.Errorf("%s: completion %d is record k=%d: not in the order kcat sent", addr, i, p.K)
				break
			}
			if id := wantID[fmt.Sprintf("%s %d", addr, p.K)]; o.message != id {
				t.Errorf("%s: record k=%d completed as message %s, want the ID of its original position %s", addr, p.K, o.message, id)
				break
			}
		}
	}
	total := endOffsetSum(t, brokers, topic)
	t.Logf("the topic holds %d records: %d from kcat, %d forwarded copies", total, len(recs), total-int64(len(recs)))
	if !offHome && total != int64(len(recs)) {
		t.Errorf("records were forwarded although all were home: the topic holds %d, kcat wrote %d", total, len(recs))
	}
	if offHome && total <= int64(len(recs)) {
		t.Errorf("nothing was forwarded: the topic holds %d records, kcat wrote %d", total, len(recs))
	}
	if lag := groupLag(t, brokers, topic); lag != 0 {
		t.Errorf("the group has %d records not committed after the workers stopped", lag)
	}
	if rows := dlqList(t, mailbox); len(rows) != 0 {
		t.Errorf("%d dead letters, want none: %v", len(rows), rows)
	}
	lines, distinct := sinkStats(t, sink)
	if distinct != len(recs) || lines-distinct > w.concurrency {
		t.Errorf("sink: %d lines, %d distinct keys; want %d keys and at most %d repeated (one kill x concurrency)",
			lines, distinct, len(recs), w.concurrency)
	}
	t.Logf("%d side effects ran twice", lines-distinct)
}

// TestKafkaBrokerRestart: two workers and a load run against a broker of
// the test's own, which is stopped (scripts/kafka.sh stop) and started
// again with the same data mid-run. The workers are left alone: they must
// carry on by themselves once the broker is back, lose nothing and apply
// nothing twice.
func TestKafkaBrokerRestart(t *testing.T) {
	dir := testDir(t)
	k := startPrivateKafka(t, dir)
	brokers := k.brokers
	const concurrency, outage = 16, 5 * time.Second
	l := newCheckedLoad(workload.Spec{Actors: 100, Count: 20000, Seed: 9, PoisonEvery: 200, FailEvery: 50}, 500)
	topic := kafkaTopic(t, brokers)
	mailbox := "kafka://" + brokers + "/" + topic
	journalURL := sqliteJournal(dir)
	sink := filepath.Join(dir, "sink.ndjson")
	begin := time.Now()
	elapsed := func() string { return time.Since(begin).Round(100 * time.Millisecond).String() }

	w := workerArgs{mailbox: mailbox, journal: journalURL, sink: sink, concurrency: concurrency}
	first := w
	first.extra = []string{"--partitions", "12"}
	w1 := startWorker(t, dir, "worker-1", first)
	w1.waitRunning(t, time.Minute)
	w2 := startWorker(t, dir, "worker-2", w)
	waitOwned(t, 2*time.Minute, "the partitions to spread over both workers", func() bool {
		a, b := len(w1.owned()), len(w2.owned())
		return a > 0 && b > 0 && a+b == 12
	}, w1, w2)
	load := l.start(t, dir, mailbox)
	waitfor.Until(t, time.Minute, "3,000 messages processed", func() bool { return sinkLines(sink) >= 3000 })

	took := k.stop(t)
	down := sinkLines(sink)
	t.Logf("%s: broker stopped (in %s) after %d side effects", elapsed(), took.Round(time.Millisecond), down)
	time.Sleep(outage) // the outage itself, not a wait for a condition
	took = k.start(t)
	t.Logf("%s: broker started again (in %s), %d side effects during the outage", elapsed(), took.Round(time.Millisecond), sinkLines(sink)-down)
	// Publish waits Options.PublishTimeout (30s) for the broker, and a
	// broker that is slow to start again outlasts that. The messages keep
	// their IDs, so the load can be published again from the start.
	republish := func() {
		t.Logf("%s: producer load failed across the restart (%v: %s); publishing the load again", elapsed(), load.err, load.tail(1))
		os.Rename(load.logPath, load.logPath+".1")
		load = l.start(t, dir, mailbox)
	}
	if load.exited() && load.err != nil {
		republish()
	}
	back := sinkLines(sink)
	waitfor.Until(t, 2*time.Minute, "the workers to process messages again", func() bool { return sinkLines(sink) >= back+1000 })
	t.Logf("%s: the workers are processing again", elapsed())

	if load.wait(3*time.Minute) && load.err != nil {
		republish()
	}
	l.finish(t, dir, load, 3*time.Minute)
	t.Logf("%s: load published", elapsed())
	j := openJournal(t, journalURL)
	reg := l.waitSettled(t, j, mailbox)
	for _, p := range []*process{w1, w2} {
		if p.exited() {
			t.Errorf("%s exited during the run: %v\n%s", p.name, p.err, p.tail(10))
		}
	}
	stopAll(t, time.Minute, w1, w2)
	l.checkSettled(t, reg, j, brokers, topic, mailbox)
	// The restart may end claims as lost, abandoning the handlers in flight
	// on both workers.
	extra := l.want.checkSink(t, sink, 2*concurrency)
	t.Logf("%s: %d side effects ran twice (bound %d)", elapsed(), extra, 2*concurrency)
}

// TestKafkaDeadLettersAndRedrive: poison messages of three kinds (invalid
// payloads, a handler that fails more often than --max-attempts allows,
// and a kcat record whose key is not an address) must end up in the DLQ
// topic, exactly those, each with its provenance in headers (read with
// kcat) and in `worker dlq show`. After a restart with more attempts
// allowed, `worker dlq redrive` must bring them back in their original
// order per actor: the journal must list each actor's outcomes in publish
// order, then the redriven ones in the same order.
func TestKafkaDeadLettersAndRedrive(t *testing.T) {
	t.Parallel()
	brokers := kafkaBrokers(t)
	requireKcat(t)
	dir := testDir(t)
	topic := kafkaTopic(t, brokers)
	mailbox := "kafka://" + brokers + "/" + topic
	journalURL := sqliteJournal(dir)
	const partitions = 12

	// Per actor: valid, invalid, failing 3 times, valid, failing 3 times,
	// invalid (not an integer).
	type sent struct {
		id, addr, payload, reason string
		attempts                  int
	}
	var msgs []sent
	var ndjson strings.Builder
	for _, a := range []string{"counter/1", "counter/2", "counter/3"} {
		for i, m := range []struct{ payload, reason string }{
			{`{"add":1}`, ""},
			{`{"add":"x","k":2}`, "permanent error"},
			{`{"add":2,"failTimes":3,"k":3}`, "attempts exhausted"},
			{`{"add":3}`, ""},
			{`{"add":5,"failTimes":3,"k":5}`, "attempts exhausted"},
			{`{"add":1.5,"k":6}`, "permanent error"},
		} {
			s := sent{id: fmt.Sprintf("%s-%s-%d", topic, a, i+1), addr: a, payload: m.payload, reason: m.reason}
			switch m.reason {
			case "permanent error":
				s.attempts = 1
			case "attempts exhausted":
				s.attempts = 2
			}
			msgs = append(msgs, s)
			fmt.Fprintf(&ndjson, `{"actor":%q,"id":%q,"data":%s}`+"\n", a, s.id, m.payload)
		}
	}

	wa := startWorker(t, dir, "worker-a", workerArgs{mailbox: mailbox, journal: journalURL, concurrency: 4,
		extra: []string{"--partitions", strconv.Itoa(partitions), "--max-attempts", "2"}})
	wa.waitRunning(t, time.Minute)
	if r := run(t, ndjson.String(), producerBin, "send", "--mailbox", mailbox); r.code != 0 {
		t.Fatalf("producer send: status %d: %s", r.code, r.stderr)
	}
	// Two records from kcat: an invalid one with a header of its own, and
	// one whose key is not an address.
	kin := "counter/4:{\"add\":\"y\"}\nnot-an-address:{\"add\":1}\n"
	cmd := exec.Command("kcat", "-P", "-b", brokers, "-t", topic, "-K:", "-H", "trace=t-42")
	cmd.Stdin = strings.NewReader(kin)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("kcat -P: %v\n%s", err, out)
	}

	var poison []sent
	for _, m := range msgs {
		if m.reason != "" {
			poison = append(poison, m)
		}
	}
	wantDead := len(poison) + 2
	waitfor.Every(t, 2*time.Minute, 500*time.Millisecond, fmt.Sprintf("%d dead letters", wantDead), func() bool {
		return len(dlqList(t, mailbox)) >= wantDead
	})
	j := openJournal(t, journalURL)
	reg := actorRegistry(t)
	before := map[string]counter.State{"counter/1": {Value: 4, Applied: 2}, "counter/2": {Value: 4, Applied: 2}, "counter/3": {Value: 4, Applied: 2}}
	waitfor.Every(t, time.Minute, 500*time.Millisecond, "the valid messages applied", func() bool {
		return diffStates(context.Background(), reg, j, before).wrong == 0
	})
	wa.stop(t, time.Minute)

	// Where each message was consumed from: the mailbox topic, read with
	// kcat. A record off its home partition (kcat's) is not consumed there
	// but forwarded home; the copy carries the original's position as its
	// ID.
	pos := map[string]string{}    // message ID → "partition offset" of the record consumed
	kcatID := map[string]string{} // key → message ID of the record kcat wrote
	for _, r := range kcatRecords(t, brokers, topic) {
		id := r.headers[kafka.HeaderID]
		if id == "" {
			id = fmt.Sprintf("%s/%d/%d", topic, r.partition, r.offset)
			kcatID[r.key] = id
		}
		if channel.HomePartition(r.key, partitions) == r.partition {
			pos[id] = fmt.Sprintf("%d %d", r.partition, r.offset)
		}
	}
	kcatIDs := []string{kcatID["counter/4"], kcatID["not-an-address"]}
	if kcatIDs[0] == "" || kcatIDs[1] == "" {
		t.Fatalf("kcat's 2 records are not both in %s: %v", topic, kcatID)
	}

	// The DLQ topic, read with kcat: one record per dead letter, keyed by
	// its ID, the original payload as value, the provenance in headers.
	letters := map[string]kcatRec{} // message ID → its dead letter
	for _, r := range kcatRecords(t, brokers, topic+".dlq") {
		letters[r.headers[kafka.HeaderID]] = r
	}
	if len(letters) != wantDead {
		t.Errorf("%s holds dead letters of %d messages, want %d", topic+".dlq", len(letters), wantDead)
	}
	check := func(id, addr, payload, reason string, attempts int, extra map[string]string) {
		t.Helper()
		r, ok := letters[id]
		if !ok {
			t.Errorf("message %s (%s) is not in the DLQ topic", id, addr)
			return
		}
		h := r.headers
		want := map[string]string{
			"postbox-address": addr, "postbox-source-backend": "kafka", "postbox-source-topic": topic,
			"postbox-attempts": strconv.Itoa(attempts), "postbox-reason": reason,
		}
		for k, v := range extra {
			want[k] = v
		}
		for k, v := range want {
			if h[k] != v {
				t.Errorf("dead letter of %s: header %s = %q, want %q", id, k, h[k], v)
			}
		}
		if p := pos[id]; p == "" || p != h["postbox-source-partition"]+" "+h["postbox-source-offset"] {
			t.Errorf("dead letter of %s: source partition/offset %s/%s, but it was consumed at %q",
				id, h["postbox-source-partition"], h["postbox-source-offset"], p)
		}
		for _, k := range []string{"postbox-dead-lettered-at", "postbox-source-published"} {
			if _, err := time.Parse(time.RFC3339Nano, h[k]); err != nil {
				t.Errorf("dead letter of %s: header %s = %q: %v", id, k, h[k], err)
			}
		}
		if h["postbox-worker"] == "" {
			t.Errorf("dead letter of %s: no postbox-worker header", id)
		}
		for n := 1; n <= attempts; n++ {
			if h[fmt.Sprintf("postbox-error-%d", n)] == "" {
				t.Errorf("dead letter of %s: no postbox-error-%d header (headers %v)", id, n, h)
			}
		}
		if r.value != payload {
			t.Errorf("dead letter of %s: value %q, want the original payload %q", id, r.value, payload)
		}
	}
	for _, m := range poison {
		check(m.id, m.addr, m.payload, m.reason, m.attempts, nil)
	}
	check(kcatIDs[0], "counter/4", `{"add":"y"}`, "permanent error", 1, map[string]string{"orig-trace": "t-42"})
	// It has no address: the key is in orig-postbox-bad-address.
	check(kcatIDs[1], "", `{"add":1}`, "no actor address", 0,
		map[string]string{"orig-trace": "t-42", "orig-postbox-bad-address": "not-an-address"})

	// The same through the CLI.
	rows := dlqList(t, mailbox)
	if len(rows) != wantDead {
		t.Errorf("worker dlq list: %d dead letters, want %d", len(rows), wantDead)
	}
	idOf := map[string]string{} // message ID → dead-letter ID
	for _, r := range rows {
		show := run(t, "", workerBin, "dlq", "show", r.id, "--mailbox", mailbox)
		var env struct {
			MessageID string          `json:"message_id"`
			Address   string          `json:"address"`
			Payload   json.RawMessage `json:"payload"`
			Attempts  int             `json:"attempts"`
			Source    json.RawMessage `json:"source"`
		}
		if show.code != 0 || json.Unmarshal([]byte(show.stdout), &env) != nil {
			t.Fatalf("worker dlq show %s: status %d: %s%s", r.id, show.code, show.stdout, show.stderr)
		}
		if env.MessageID == "" {
			t.Fatalf("worker dlq show %s: no message ID in %s", r.id, show.stdout)
		}
		idOf[env.MessageID] = r.id
		for _, m := range poison {
			var payload bytes.Buffer
			json.Compact(&payload, env.Payload)
			if m.id == env.MessageID && (env.Address != m.addr || env.Attempts != m.attempts || payload.String() != m.payload ||
				!strings.Contains(string(env.Source), fmt.Sprintf(`"partition": %d`, channel.HomePartition(m.addr, partitions)))) {
				t.Errorf("worker dlq show %s: %s\nwant address %s, %d attempts, payload %s, its home partition",
					r.id, show.stdout, m.addr, m.attempts, m.payload)
			}
		}
	}
	for _, m := range poison {
		if idOf[m.id] == "" {
			t.Errorf("worker dlq show: no dead letter for message %s", m.id)
		}
	}

	// Allow more attempts ("fix the cause"), then redrive everything that
	// has an address: the failing messages now succeed, the invalid ones
	// are dead-lettered again, all in their original order per actor.
	wb := startWorker(t, dir, "worker-b", workerArgs{mailbox: mailbox, journal: journalURL, concurrency: 4,
		extra: []string{"--max-attempts", "5"}})
	wb.waitRunning(t, time.Minute)
	redrive := []string{"dlq", "redrive", "--mailbox", mailbox}
	for _, m := range poison {
		redrive = append(redrive, idOf[m.id])
	}
	redrive = append(redrive, idOf[kcatIDs[0]])
	if r := run(t, "", workerBin, redrive...); r.code != 0 || strings.TrimSpace(r.stdout) != fmt.Sprintf("redrove %d", len(poison)+1) {
		t.Fatalf("worker dlq redrive: status %d: %s%s", r.code, r.stdout, r.stderr)
	}
	after := map[string]counter.State{"counter/1": {Value: 11, Applied: 4}, "counter/2": {Value: 11, Applied: 4}, "counter/3": {Value: 11, Applied: 4}}
	waitfor.Every(t, 2*time.Minute, 500*time.Millisecond, "the redriven messages applied", func() bool {
		return diffStates(context.Background(), reg, j, after).wrong == 0
	})
	// Dead again: the invalid ones, under their redrive IDs, and the record
	// without an address, which was not redriven.
	wantAgain := map[string]bool{kcatIDs[1]: true, kcatIDs[0] + ".r1": true}
	for _, m := range poison {
		if m.reason == "permanent error" {
			wantAgain[m.id+".r1"] = true
		}
	}
	var envs []string
	waitfor.Every(t, time.Minute, 500*time.Millisecond, "the invalid redriven messages dead-lettered again", func() bool {
		envs = envs[:0]
		for _, e := range dlqEnvelopes(t, mailbox) {
			envs = append(envs, e.MessageID)
		}
		return len(envs) >= len(wantAgain)
	})
	for _, id := range envs {
		if !wantAgain[id] {
			t.Errorf("after the redrive, message %s is in the DLQ", id)
		}
		delete(wantAgain, id)
	}
	for id := range wantAgain {
		t.Errorf("after the redrive, message %s is not in the DLQ", id)
	}
	wb.stop(t, time.Minute)

	// Order: each actor's outcomes in publish order, then the redriven
	// ones in the same order.
	for _, a := range []string{"counter/1", "counter/2", "counter/3"} {
		var want, got []string
		var redriven []string
		for _, m := range msgs {
			if m.addr != a {
				continue
			}
			kind := "complete"
			if m.reason != "" {
				kind = "dead-letter"
				redrivenKind := "complete"
				if m.reason == "permanent error" {
					redrivenKind = "dead-letter"
				}
				redriven = append(redriven, redrivenKind+" "+m.id+".r1")
			}
			want = append(want, kind+" "+m.id)
		}
		want = append(want, redriven...)
		for _, o := range journalOutcomes(t, journalURL, a) {
			got = append(got, o.kind+" "+o.message)
			if strings.HasSuffix(o.message, ".r1") && o.kind == "complete" && o.headers[dlq.HeaderRedriveOf] != strings.TrimSuffix(o.message, ".r1") {
				t.Errorf("%s: redriven %s has %s = %q", a, o.message, dlq.HeaderRedriveOf, o.headers[dlq.HeaderRedriveOf])
			}
		}
		if strings.Join(got, "\n") != strings.Join(want, "\n") {
			t.Errorf("%s: outcomes in the journal:\n%s\nwant:\n%s", a, strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
	}

	// Redriven dead letters are tombstoned; the one left is purged.
	if r := run(t, "", workerBin, "dlq", "purge", idOf[kcatIDs[1]], "--mailbox", mailbox); r.code != 0 || strings.TrimSpace(r.stdout) != "purged 1" {
		t.Errorf("worker dlq purge: status %d: %s%s", r.code, r.stdout, r.stderr)
	}
	last := map[string]kcatRec{} // dead-letter ID → its newest record
	for _, r := range kcatRecords(t, brokers, topic+".dlq") {
		last[r.key] = r
	}
	for _, m := range poison {
		if r := last[idOf[m.id]]; !r.tombstone {
			t.Errorf("dead letter %s of %s: its newest record is not a tombstone after the redrive", idOf[m.id], m.id)
		}
	}
	if r := last[idOf[kcatIDs[1]]]; !r.tombstone {
		t.Errorf("dead letter %s: its newest record is not a tombstone after the purge", idOf[kcatIDs[1]])
	}
}

// kcatRec is a record read by kcat, with its headers.
type kcatRec struct {
	partition int32
	offset    int64
	key       string
	value     string
	tombstone bool
	headers   map[string]string
}

// kcatRecords reads a whole topic with kcat, headers (if any) included.
// kcat prints headers as k=v pairs joined by commas; every header postbox
// writes is named postbox-… or orig-…, which tells a separating comma from
// one in a value. Values must not hold newlines or tabs.
func kcatRecords(t *testing.T, brokers, topic string) []kcatRec {
	t.Helper()
	out, err := exec.Command("kcat", "-C", "-b", brokers, "-t", topic, "-o", "beginning", "-e", "-q",
		"-f", "%p\t%o\t%k\t%S\t%h\t%s\n").Output()
	if err != nil {
		t.Fatalf("kcat -C %s: %v", topic, err)
	}
	var recs []kcatRec
	for _, line := range strings.Split(strings.TrimRight(string(out), "\n"), "\n") {
		if line == "" {
			continue
		}
		f := strings.SplitN(line, "\t", 6)
		if len(f) != 6 {
			t.Fatalf("kcat -C %s: unexpected line %q", topic, line)
		}
		p, err1 := strconv.ParseInt(f[0], 10, 32)
		o, err2 := strconv.ParseInt(f[1], 10, 64)
		if err := errors.Join(err1, err2); err != nil {
			t.Fatalf("kcat -C %s: line %q: %v", topic, line, err)
		}
		r := kcatRec{partition: int32(p), offset: o, key: f[2], value: f[5], tombstone: f[3] == "-1", headers: map[string]string{}}
		hs := f[4]
		for hs != "" {
			next := headerStart.FindStringIndex(hs[1:])
			item := hs
			if next != nil {
				item, hs = hs[:next[0]+1], hs[next[0]+2:]
			} else {
				hs = ""
			}
			k, v, _ := strings.Cut(item, "=")
			r.headers[k] = v
		}
		recs = append(recs, r)
	}
	return recs
}

var headerStart = regexp.MustCompile(`,(postbox-[a-z0-9-]+|orig-[^=,]+|trace)=`)

// TestKafkaForwardsOldRecords: records written by kcat off their home
// partitions wait in the topic longer than the Kafka channel's publish
// timeout (30s) before a worker starts, as they do whenever workers are
// down for a while. The worker must still forward and process them all.
func TestKafkaForwardsOldRecords(t *testing.T) {
	t.Parallel()
	brokers := kafkaBrokers(t)
	requireKcat(t)
	const publishTimeout = 30 * time.Second // kafka.Options.PublishTimeout's default
	dir := testDir(t)
	topic := kafkaTopic(t, brokers)
	mailbox := "kafka://" + brokers + "/" + topic
	journalURL := sqliteJournal(dir)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := kafka.EnsureTopics(ctx, strings.Split(brokers, ","), topic, 12, 1); err != nil {
		t.Fatal(err)
	}
	want := map[string]counter.State{}
	var in strings.Builder
	for i := range 40 {
		addr := fmt.Sprintf("counter/%d", i%4)
		fmt.Fprintf(&in, "%s:{\"add\":%d}\n", addr, i)
		st := want[addr]
		st.Value += int64(i)
		st.Applied++
		want[addr] = st
	}
	cmd := exec.Command("kcat", "-P", "-b", brokers, "-t", topic, "-K:")
	cmd.Stdin = strings.NewReader(in.String())
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("kcat -P: %v\n%s", err, out)
	}
	published := time.Now()
	time.Sleep(publishTimeout + 2*time.Second) // the records' age is the point of the test

	age := time.Since(published).Round(time.Second)
	w := startWorker(t, dir, "worker", workerArgs{mailbox: mailbox, journal: journalURL, concurrency: 4})
	j := openJournal(t, journalURL)
	reg := actorRegistry(t)
	waitfor.Succeeds(t, time.Minute, 500*time.Millisecond, func() error {
		if d := diffStates(context.Background(), reg, j, want); d.wrong != 0 {
			return fmt.Errorf("records published %s before the worker started are still not processed: %s; forwarding failed %d times",
				age, d, w.count("kafka: forwarding records to their home partitions failed"))
		}
		return nil
	})
	w.stop(t, time.Minute)
	if lag := groupLag(t, brokers, topic); lag != 0 {
		t.Errorf("the group has %d records not committed after the worker stopped", lag)
	}
}

// kafkaBrokers returns the brokers as worker URLs and kcat take them:
// host:port[,host:port].
func kafkaBrokers(t *testing.T) string {
	t.Helper()
	return strings.Join(testenv.Kafka(t), ",")
}

// requireKcat fails (under CI) or skips the test when kcat is missing.
func requireKcat(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("kcat"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("kcat is not installed, and CI must run the Kafka interop tests: apt-get install kcat")
		}
		t.Skip("kcat is not installed: apt-get install kcat")
	}
}

// kafkaTopic returns a topic name that no other test, and no earlier run,
// uses, and deletes the topic and its dead-letter topic when the test ends.
func kafkaTopic(t *testing.T, brokers string) string {
	t.Helper()
	topic := uniqueName(t)
	t.Cleanup(func() {
		if os.Getenv("POSTBOX_IT_KEEP") == "" {
			kafkaAdmin(t, brokers, func(ctx context.Context, adm *kadm.Client) { adm.DeleteTopics(ctx, topic, topic+".dlq") })
		}
	})
	return topic
}

// kafkaAdmin runs fn with an admin client of brokers, within 30s.
func kafkaAdmin(t *testing.T, brokers string, fn func(context.Context, *kadm.Client)) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cl, err := kgo.NewClient(kgo.SeedBrokers(strings.Split(brokers, ",")...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	fn(ctx, kadm.NewClient(cl))
}

// endOffsets returns the end offset of each partition of topic.
func endOffsets(t *testing.T, ctx context.Context, adm *kadm.Client, topic string) kadm.ListedOffsets {
	t.Helper()
	ends, err := adm.ListEndOffsets(ctx, topic)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		t.Fatalf("end offsets of %s: %v", topic, err)
	}
	return ends
}

// checkSettled checks what the workers must leave behind once stopped:
// every counter exact, every record committed by the group, and exactly
// the poison messages dead-lettered.
func (l checkedLoad) checkSettled(t *testing.T, reg *actorhost.Registry, j journal.Journal, brokers, topic, mailbox string) {
	t.Helper()
	if d := diffStates(context.Background(), reg, j, l.want.states); d.wrong != 0 {
		t.Errorf("after the workers stopped, %s", d)
	}
	if lag := groupLag(t, brokers, topic); lag != 0 {
		t.Errorf("the group has %d records not committed after the workers stopped", lag)
	}
	l.want.checkDeadLetters(t, mailbox)
}

// groupLag returns, for the mailbox group of topic, the sum over its
// partitions of end offset minus committed offset.
func groupLag(t *testing.T, brokers, topic string) int64 {
	t.Helper()
	var lag int64
	kafkaAdmin(t, brokers, func(ctx context.Context, adm *kadm.Client) {
		ends := endOffsets(t, ctx, adm, topic)
		committed, err := adm.FetchOffsets(ctx, "postbox."+topic)
		if err == nil {
			err = committed.Error()
		}
		if err != nil {
			t.Fatalf("committed offsets of group postbox.%s: %v", topic, err)
		}
		ends.Each(func(o kadm.ListedOffset) {
			c, ok := committed.Lookup(topic, o.Partition)
			switch {
			case !ok:
				lag += o.Offset
			default:
				lag += o.Offset - c.At
			}
		})
	})
	return lag
}

// endOffsetSum returns how many records a topic's partitions hold in all.
func endOffsetSum(t *testing.T, brokers, topic string) int64 {
	t.Helper()
	var n int64
	kafkaAdmin(t, brokers, func(ctx context.Context, adm *kadm.Client) {
		endOffsets(t, ctx, adm, topic).Each(func(o kadm.ListedOffset) { n += o.Offset })
	})
	return n
}

// stopBetweenJournalWrites SIGSTOPs a worker just after one of its writes
// to the SQLite journal at journalPath has committed, and returns how many
// tries that took. Stopped there, it holds no lock: a worker stopped
// inside a journal transaction would block every other worker's journal
// writes (SQLite has one writer) until it resumes, so none could take its
// partitions over, which is what a zombie test needs. And under load its
// next group commit, gathered during the last one, is then waiting to be
// written with the old epoch as soon as it resumes. In WAL mode the write
// lock is an exclusive POSIX lock on byte 120 of the -shm file, which
// /proc/locks shows.
func stopBetweenJournalWrites(t *testing.T, p *process, journalPath string) int {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(journalPath+"-shm", &st); err != nil {
		t.Fatalf("stat the journal's shared memory file: %v", err)
	}
	pid := strconv.Itoa(p.cmd.Process.Pid)
	inode := ":" + strconv.FormatUint(st.Ino, 10)
	holding := func() bool {
		b, err := os.ReadFile("/proc/locks")
		if err != nil {
			t.Fatalf("read /proc/locks: %v", err)
		}
		for _, line := range strings.Split(string(b), "\n") {
			// 1: POSIX  ADVISORY  WRITE 2266 fe:00:9994369 120 120
			f := strings.Fields(line)
			if len(f) >= 8 && f[1] == "POSIX" && f[3] == "WRITE" && f[4] == pid &&
				strings.HasSuffix(f[5], inode) && f[6] == "120" {
				return true
			}
		}
		return false
	}
	for try := 1; try <= 200; try++ {
		waitfor.Until(t, 10*time.Second, p.name+" to write to the journal", holding)
		deadline := time.Now().Add(10 * time.Second)
		for holding() {
			if time.Now().After(deadline) {
				t.Fatalf("%s held the journal's write lock for 10s", p.name)
			}
		}
		p.signal(t, syscall.SIGSTOP)
		waitfor.Until(t, 5*time.Second, p.name+" to stop", func() bool { return allThreadsStopped(p.cmd.Process.Pid) })
		if !holding() {
			return try
		}
		p.signal(t, syscall.SIGCONT)
	}
	t.Fatalf("%s held the journal's write lock at each of 200 tries to stop it between two writes", p.name)
	return 0
}

// allThreadsStopped reports whether every thread of pid is stopped by a
// signal (state T in /proc/PID/task/*/stat).
func allThreadsStopped(pid int) bool {
	stats, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/stat", pid))
	if len(stats) == 0 {
		return false
	}
	for _, path := range stats {
		b, err := os.ReadFile(path)
		if err != nil {
			return false
		}
		// pid (comm) S ...: the state follows the last ')'.
		i := strings.LastIndexByte(string(b), ')')
		if i < 0 || i+2 >= len(b) || b[i+2] != 'T' {
			return false
		}
	}
	return true
}

// privateKafka is a broker of one test's own, run by scripts/kafka.sh on
// free loopback ports with its data in the test's directory, so that the
// test can stop and restart it without disturbing the tests that share the
// broker of KAFKA_BROKERS.
type privateKafka struct {
	brokers string
	env     []string
}

// startPrivateKafka starts a broker and stops it when the test ends. It
// needs what scripts/kafka.sh needs (a JDK, and Maven or the jars fetched
// by an earlier start); it runs where KAFKA_BROKERS is set, as that says
// the Kafka tests are wanted there.
func startPrivateKafka(t *testing.T, dir string) *privateKafka {
	t.Helper()
	kafkaBrokers(t)
	if _, err := exec.LookPath("java"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("java is not installed: scripts/kafka.sh needs a JDK 17+ to run a broker of this test's own")
		}
		t.Skip("java is not installed: scripts/kafka.sh needs a JDK 17+ to run a broker of this test's own")
	}
	port := func() string {
		_, p, _ := net.SplitHostPort(testenv.FreeAddr(t))
		return p
	}
	client := port()
	k := &privateKafka{
		brokers: "127.0.0.1:" + client,
		env: append(os.Environ(), "KAFKA_PORT="+client, "KAFKA_CONTROLLER_PORT="+port(),
			"KAFKA_DATA_DIR="+filepath.Join(dir, "kafka")),
	}
	t.Cleanup(func() { k.script(t, "stop") })
	k.start(t)
	return k
}

func (k *privateKafka) start(t *testing.T) time.Duration {
	t.Helper()
	start := time.Now()
	if out := k.script(t, "start"); !strings.Contains(out, "KAFKA_BROKERS="+k.brokers) {
		t.Fatalf("scripts/kafka.sh start printed no KAFKA_BROKERS=%s:\n%s", k.brokers, out)
	}
	return time.Since(start)
}

func (k *privateKafka) stop(t *testing.T) time.Duration {
	t.Helper()
	start := time.Now()
	k.script(t, "stop")
	return time.Since(start)
}

// script runs scripts/kafka.sh with the broker's environment.
func (k *privateKafka) script(t *testing.T, verb string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "../scripts/kafka.sh", verb)
	cmd.Env = k.env
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Errorf("scripts/kafka.sh %s: %v\n%s", verb, err, out)
	}
	return string(out)
}
