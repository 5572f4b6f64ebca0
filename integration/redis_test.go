package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/postbox-dev/postbox/actors/tally"
	"github.com/postbox-dev/postbox/backend"
	"github.com/postbox-dev/postbox/channel"
	"github.com/postbox-dev/postbox/internal/testenv"
	"github.com/postbox-dev/postbox/internal/waitfor"
	"github.com/postbox-dev/postbox/internal/workload"
)

// Three workers share a Redis mailbox and a Redis journal while a load
// with poison messages and messages that fail once is published; two of
// them are SIGKILLed at random moments and replaced. Every counter (value
// and applied count) must be exact, the DLQ must hold exactly the poison
// messages, every valid message must have made its side effect, and
// effects may run twice only for messages in flight at a kill.
//
// The tally variant has no side effect to journal, and gets every 7th
// message a second time, with its ID, later in the run: its values and
// applied counts alone show a message applied twice or lost.
func TestRedisScaleAndCrash(t *testing.T) {
	t.Parallel()
	addr := testenv.Redis(t)
	for _, v := range []struct {
		name string
		spec workload.Spec
	}{
		{"counter", workload.Spec{Actors: 100, Count: 12000, Seed: 21, PoisonEvery: 250, FailEvery: 40}},
		{"tally-duplicates", workload.Spec{Type: tally.Type, Actors: 100, Count: 12000, Seed: 22, PoisonEvery: 250, DuplicateEvery: 7}},
	} {
		t.Run(v.name, func(t *testing.T) {
			t.Parallel()
			redis := newRedisStore(t, addr)
			scaleAndCrash(t, crashScenario{
				stores:  redis.stores(8),
				workers: 3, kills: 2, concurrency: 16,
				load: loadRun{spec: v.spec, rate: 2000},
				// A killed worker's partitions move after the lease TTL.
				extra: []string{"--lease-ttl", "2s"},
			})
		})
	}
}

// A worker that owns Redis partitions is paused (SIGSTOP) until another worker
// has taken its partitions and their journal epochs, then resumed (SIGCONT): a
// zombie. Any journal write it makes under its old epochs is refused
// (fenced), it gives up those partitions and acks nothing the new owner has
// claimed, and at the end every counter is exact.
func TestRedisZombieIsFenced(t *testing.T) {
	t.Parallel()
	addr := testenv.Redis(t)
	redis := newRedisStore(t, addr)
	const partitions = 8
	dir := t.TempDir()
	sink := filepath.Join(dir, "sink.ndjson")
	ctx := context.Background()

	mb := openMailbox(t, redis.mailboxURL, backend.MailboxOptions{Partitions: partitions})
	load := loadRun{spec: workload.Spec{Actors: 60, Count: 20000, Seed: 33, PoisonEvery: 200, FailEvery: 30}, rate: 2000}
	check := newChecker(t, redis.journalURL, mb, expected(load.spec))
	producer := load.start(t, dir, "load", redis.mailboxURL)

	const concurrency = 8
	adminA, adminB := testenv.FreeAddr(t), testenv.FreeAddr(t)
	flags := append(slices.Clone(serviceFlags), "--lease-ttl", "1s", "--log-level", "info")
	a := startWorker(t, dir, "worker-a", workerArgs{mailbox: redis.mailboxURL, journal: redis.journalURL, sink: sink, concurrency: concurrency, admin: adminA, extra: flags})
	owned := func(w *process) []int {
		var ps []int
		for p := range partitions {
			if pid, _ := redis.leaseOwner(ctx, p); pid == w.pid() {
				ps = append(ps, p)
			}
		}
		return ps
	}
	waitfor.Until(t, 30*time.Second, "worker A to own every partition and process messages", func() bool {
		alive(t, a)
		return len(owned(a)) == partitions && processedOn(adminA) > 0
	})
	b := startWorker(t, dir, "worker-b", workerArgs{mailbox: redis.mailboxURL, journal: redis.journalURL, sink: sink, concurrency: concurrency, admin: adminB, extra: flags})
	waitfor.Until(t, 30*time.Second, "the partitions to be shared by A and B", func() bool {
		alive(t, a, b)
		return len(owned(a)) > 0 && len(owned(b)) > 0 && len(owned(a))+len(owned(b)) == partitions
	})

	// Pause A while it works, and wait until B owns A's partitions, with new
	// journal epochs, and has processed messages of them.
	zombie := owned(a)
	epochs := map[int]int64{}
	for _, p := range zombie {
		e, err := check.j.Epoch(ctx, fmt.Sprintf("%s/%d", mb.Name, p))
		epochs[p] = e
		if err != nil {
			t.Fatal(err)
		}
	}
	// Stop it with work in flight, so that it has journal writes to make
	// when it resumes.
	waitfor.Until(t, 30*time.Second, "worker A to have messages in flight", func() bool {
		n, _ := metric(adminA, "postbox_messages_in_flight")
		return n > 0
	})
	gaveUpBefore := a.count("partition fenced") + a.count("partition lost")
	a.signal(t, syscall.SIGSTOP)
	stopped := time.Now()
	t.Logf("worker A (pid %d) stopped, owning partitions %v", a.pid(), zombie)
	var processedB float64
	waitfor.Until(t, 30*time.Second, "worker B to take over A's partitions and their epochs", func() bool {
		alive(t, b)
		for _, p := range zombie {
			pid, _ := redis.leaseOwner(ctx, p)
			e, err := check.j.Epoch(ctx, fmt.Sprintf("%s/%d", mb.Name, p))
			if pid != b.pid() || err != nil || e <= epochs[p] {
				return false
			}
		}
		processedB = processedOn(adminB)
		return true
	})
	waitfor.Until(t, 30*time.Second, "worker B to process A's former messages", func() bool {
		return processedOn(adminB) >= processedB+100
	})
	a.signal(t, syscall.SIGCONT)
	t.Logf("worker A resumed after %s", time.Since(stopped).Round(time.Millisecond))

	// The zombie resumes with journal writes of A's partitions queued or about
	// to be made under the old epochs. It gives up each of those partitions,
	// fenced by a refused write or told by its lease keeper that the lease
	// is gone, whichever it learns first; either way it acks nothing more
	// from them (the exact counters and the bound on repeated effects below
	// check what it did). It must not crash, and works on the partitions it
	// gets again.
	waitfor.Succeeds(t, 30*time.Second, 50*time.Millisecond, func() error {
		alive(t, a, b)
		if gaveUp := a.count("partition fenced") + a.count("partition lost") - gaveUpBefore; gaveUp < len(zombie) {
			return fmt.Errorf("since it resumed, the zombie has given up %d of its %d partitions (%d \"partition fenced\", %d \"partition lost\" log lines)",
				gaveUp, len(zombie), a.count("partition fenced"), a.count("partition lost"))
		}
		return nil
	})
	var fenced float64
	waitfor.Until(t, 10*time.Second, "the fence metric to match the fence log lines", func() bool {
		fenced, _ = metric(adminA, "postbox_partitions_fenced_total")
		return float64(a.count("partition fenced")) == fenced
	})
	t.Logf("zombie: postbox_partitions_fenced_total %v; %d \"partition fenced\", %d \"partition lost\" log lines",
		fenced, a.count("partition fenced"), a.count("partition lost"))
	if fenced == 0 {
		t.Log("note: the zombie learned its leases were gone before any of its journal writes was refused")
	}

	producer.exit(t, 2*time.Minute)
	if err := check.waitExact(2 * time.Minute); err != nil {
		t.Fatal(err)
	}
	a.stop(t, time.Minute)
	b.stop(t, time.Minute)
	// Effects run twice only by the zombie: those it ran before the pause
	// whose results were not yet journaled, and those of handlers it started
	// after it resumed, before a fenced write of their partition cancelled the
	// partition's work. Each of its handler goroutines runs at most one of them
	// per partition.
	bound := concurrency * len(zombie)
	extra := check.final(t, "redis", sink, bound, 2)
	redis.stores(partitions).checkDrained(t)
	t.Logf("%d side effects ran twice (bound %d: A's concurrency x its partitions)", extra, bound)
}

// Redis, holding both the mailbox and the journal, is restarted (SHUTDOWN,
// then started on the same append-only file) while two workers are busy.
// The workers must ride it out, longer than their lease TTL (every claim
// is lost meanwhile), and finish the work, and nothing acknowledged may be
// lost: every counter exact at the end, with messages
// published before and after the restart.
//
// Not parallel: other tests use the same server.
func TestRedisRestartLosesNothing(t *testing.T) {
	addr := testenv.Redis(t)
	svc := restartable(t, "redis", addr)
	redis := newRedisStore(t, addr)
	ctx := context.Background()
	cfg, err := redis.client.ConfigGet(ctx, "append*").Result()
	if err != nil {
		t.Fatal(err)
	}
	if cfg["appendonly"] != "yes" || cfg["appendfsync"] != "always" {
		t.Skipf("Redis runs appendonly %s, appendfsync %s: this test shows what appendonly yes, appendfsync always keeps (the default of scripts/services.sh)",
			cfg["appendonly"], cfg["appendfsync"])
	}
	restartUnderLoad(t, restartScenario{
		stores: redis.stores(8),
		server: svc, down: 2 * time.Second,
		before: loadRun{spec: workload.Spec{Actors: 100, Count: 40000, Seed: 41, PoisonEvery: 250, FailEvery: 40}},
		after:  loadRun{spec: workload.Spec{Actors: 100, Count: 4000, Seed: 42, PoisonEvery: 250, FailEvery: 40}},
		// A lease TTL shorter than the outage: the workers lose every
		// partition while Redis is away, and must take them again.
		extra: []string{"--lease-ttl", "1s"},
	})
}

// A poison message and one that fails every attempt go to the Redis DLQ
// stream with their full provenance, as `worker dlq show` prints it; `dlq
// redrive` puts them back into the mailbox under new IDs, and the worker
// processes them again (and dead-letters them again: they are still bad).
func TestRedisDeadLetterProvenanceAndRedrive(t *testing.T) {
	t.Parallel()
	addr := testenv.Redis(t)
	redis := newRedisStore(t, addr)
	ctx := context.Background()
	dir := t.TempDir()
	store := []string{"--mailbox", redis.mailboxURL, "--journal", redis.journalURL}
	const partitions = 8

	mb := openMailbox(t, redis.mailboxURL, backend.MailboxOptions{Partitions: partitions})
	send := func(id, addr, payload string) {
		t.Helper()
		if r := run(t, "", producerBin, "send", "--mailbox", redis.mailboxURL, "--id", id, addr, payload); r.code != 0 {
			t.Fatalf("send %s: %+v", id, r)
		}
	}
	send("ok-1", "counter/9", `{"add":2}`)
	send("bad-1", "counter/9", `{"add":"x"}`)
	send("ok-2", "counter/9", `{"add":3}`)
	send("flaky-1", "counter/4", `{"add":1,"failTimes":9}`)

	// Where each message waits: its home partition, and its stream entry,
	// which gives the offset the dead letter must name.
	type position struct {
		partition int32
		offset    int64
		published time.Time
	}
	where := map[string]position{}
	for p := range partitions {
		entries, err := redis.client.XRange(ctx, fmt.Sprintf("{postbox:%s}:s:%d", redis.mailbox, p), "-", "+").Result()
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			ms, seq, _ := strings.Cut(e.ID, "-")
			msv, _ := strconv.ParseInt(ms, 10, 64)
			seqv, _ := strconv.ParseInt(seq, 10, 64)
			id, _ := e.Values["id"].(string)
			where[id] = position{partition: int32(p), offset: msv<<20 | seqv, published: time.UnixMilli(msv)}
		}
	}
	for id, addr := range map[string]string{"bad-1": "counter/9", "flaky-1": "counter/4"} {
		if got, want := where[id].partition, channel.HomePartition(addr, partitions); got != want {
			t.Fatalf("%s is on partition %d, want its home partition %d", id, got, want)
		}
	}

	worker := startProcess(t, dir, "worker", workerBin, append([]string{"run", "--max-attempts", "3",
		"--backoff-initial", "5ms", "--backoff-max", "20ms", "--log-level", "warn"}, store...)...)
	host, _ := os.Hostname()
	workerID := fmt.Sprintf("%s:%d", host, worker.pid())
	dlqList := func() map[string]string { // message address -> dead letter ID
		r := run(t, "", workerBin, append([]string{"dlq", "list"}, store...)...)
		if r.code != 0 {
			t.Fatalf("dlq list: %+v", r)
		}
		out := map[string]string{}
		for _, line := range strings.Split(strings.TrimSpace(r.stdout), "\n") {
			if f := strings.Split(line, "\t"); len(f) == 4 {
				out[f[1]] = f[0]
			}
		}
		return out
	}
	waitfor.Until(t, time.Minute, "two dead letters", func() bool {
		alive(t, worker)
		return len(dlqList()) == 2
	})

	type shown struct {
		ID        string            `json:"id"`
		MessageID string            `json:"message_id"`
		Address   string            `json:"address"`
		Payload   json.RawMessage   `json:"payload"`
		Headers   map[string]string `json:"headers"`
		Source    struct {
			Backend   string    `json:"backend"`
			Mailbox   string    `json:"mailbox"`
			Partition int32     `json:"partition"`
			Offset    int64     `json:"offset"`
			Published time.Time `json:"published"`
		} `json:"source"`
		Attempts int `json:"attempts"`
		Errors   []struct {
			Attempt int       `json:"attempt"`
			Error   string    `json:"error"`
			At      time.Time `json:"at"`
		} `json:"errors"`
		Reason         string    `json:"reason"`
		Worker         string    `json:"worker"`
		DeadLetteredAt time.Time `json:"dead_lettered_at"`
	}
	show := func(id string) shown {
		t.Helper()
		r := run(t, "", workerBin, append([]string{"dlq", "show", id}, store...)...)
		var s shown
		if r.code != 0 || json.Unmarshal([]byte(r.stdout), &s) != nil {
			t.Fatalf("dlq show %s: %+v", id, r)
		}
		return s
	}
	letters := dlqList()
	for _, c := range []struct {
		msgID, addr, payload, reason, errText string
		attempts                              int
	}{
		{"bad-1", "counter/9", `{"add":"x"}`, "permanent error", `is not {"add": <int>}`, 1},
		{"flaky-1", "counter/4", `{"add":1,"failTimes":9}`, "attempts exhausted", "failing attempt %d of 9", 3},
	} {
		s := show(letters[c.addr])
		pos := where[c.msgID]
		var payload bytes.Buffer
		json.Compact(&payload, s.Payload)
		if s.ID != letters[c.addr] || s.MessageID != c.msgID || s.Address != c.addr || payload.String() != c.payload {
			t.Errorf("dead letter of %s: id %q, message %q, address %q, payload %s", c.msgID, s.ID, s.MessageID, s.Address, s.Payload)
		}
		if s.Source.Backend != "redis" || s.Source.Mailbox != redis.mailbox || s.Source.Partition != pos.partition || s.Source.Offset != pos.offset ||
			!s.Source.Published.Equal(pos.published) {
			t.Errorf("dead letter of %s: source %+v, want backend redis, mailbox %s, partition %d, offset %d, published %s",
				c.msgID, s.Source, redis.mailbox, pos.partition, pos.offset, pos.published)
		}
		if s.Attempts != c.attempts || s.Reason != c.reason || len(s.Errors) != c.attempts {
			t.Errorf("dead letter of %s: %d attempts, reason %q, %d errors; want %d, %q, %d",
				c.msgID, s.Attempts, s.Reason, len(s.Errors), c.attempts, c.reason, c.attempts)
		}
		for i, e := range s.Errors {
			want := c.errText
			if strings.Contains(want, "%d") {
				want = fmt.Sprintf(want, i+1)
			}
			if e.Attempt != i+1 || !strings.Contains(e.Error, want) || e.At.IsZero() || e.At.After(s.DeadLetteredAt) {
				t.Errorf("dead letter of %s, error %d: %+v; want attempt %d, %q, a time before %s", c.msgID, i, e, i+1, want, s.DeadLetteredAt)
			}
		}
		if s.Worker != workerID || s.DeadLetteredAt.IsZero() || s.DeadLetteredAt.Before(pos.published) {
			t.Errorf("dead letter of %s: worker %q at %s; want %q, after %s", c.msgID, s.Worker, s.DeadLetteredAt, workerID, pos.published)
		}
	}
	r := run(t, "", workerBin, append([]string{"state", "counter/9"}, store...)...)
	if r.code != 0 || strings.Join(strings.Fields(r.stdout), "") != `{"value":5,"applied":2}` {
		t.Errorf("counter/9 around its poison message: %+v", r)
	}

	// Redrive both: they are published again as <id>.r1, with the original
	// ID in a header, and dead-lettered again.
	if r := run(t, "", workerBin, append([]string{"dlq", "redrive", "dl-nope"}, store...)...); r.code != 2 {
		t.Errorf("dlq redrive of an unknown ID: %+v, want exit status 2", r)
	}
	r = run(t, "", workerBin, append([]string{"dlq", "redrive", letters["counter/9"], letters["counter/4"]}, store...)...)
	if r.code != 0 || strings.TrimSpace(r.stdout) != "redrove 2" {
		t.Fatalf("dlq redrive: %+v", r)
	}
	waitfor.Until(t, time.Minute, "the redriven messages dead-lettered again", func() bool {
		alive(t, worker)
		envs, err := mb.DLQ.List(ctx)
		return err == nil && len(envs) == 2
	})
	envs, _ := mb.DLQ.List(ctx)
	for _, e := range envs {
		orig, ok := strings.CutSuffix(e.MessageID, ".r1")
		if !ok || (orig != "bad-1" && orig != "flaky-1") || e.Headers["postbox-redrive-of"] != orig {
			t.Errorf("after redrive: dead letter of %s with headers %v; want bad-1.r1 and flaky-1.r1, redriven from their originals",
				e.MessageID, e.Headers)
		}
	}
	r = run(t, "", workerBin, append([]string{"journal", "counter/9"}, store...)...)
	if r.code != 0 || strings.Count(r.stdout, `"kind":"dead-letter"`) != 2 || strings.Count(r.stdout, `"kind":"complete"`) != 2 {
		t.Errorf("journal of counter/9: want two completions and two dead-letter outcomes (bad-1, bad-1.r1): %+v", r)
	}
	worker.stop(t, time.Minute)
	redis.stores(partitions).checkDrained(t)
}

// redisStore is a fresh Redis mailbox and a fresh Redis journal namespace
// on one server, with a client to inspect them.
type redisStore struct {
	mailboxURL, journalURL string
	mailbox                string // the mailbox's name: the key tag of its streams
	client                 *goredis.Client
}

// newRedisStore returns a redisStore on the server at addr. Its keys are
// deleted when the test ends (unless POSTBOX_IT_KEEP is set).
func newRedisStore(t *testing.T, addr string) redisStore {
	t.Helper()
	mailbox := uniqueName(t)
	namespace := mailbox + "-j"
	c := goredis.NewClient(&goredis.Options{Addr: addr})
	t.Cleanup(func() {
		defer c.Close()
		if os.Getenv("POSTBOX_IT_KEEP") != "" {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := testenv.DeleteRedisKeys(ctx, c, "{postbox:"+mailbox+"}:*", "{postbox:"+namespace+"}:*"); err != nil {
			t.Logf("deleting the test's Redis keys: %v", err)
		}
	})
	return redisStore{mailboxURL: "redis://" + addr + "/" + mailbox, journalURL: "redis://" + addr + "/" + namespace,
		mailbox: mailbox, client: c}
}

// stores are r's mailbox, of partitions, and journal, for a scenario.
func (r redisStore) stores(partitions int) stores {
	return stores{mailbox: r.mailboxURL, journal: r.journalURL, backend: "redis", partitions: partitions,
		drained: func(ctx context.Context) error { return r.drained(ctx, partitions) }}
}

// drained checks that every partition stream of the mailbox is empty and
// has nothing pending: every message was acked (and so deleted).
func (r redisStore) drained(ctx context.Context, partitions int) error {
	for p := range partitions {
		key := fmt.Sprintf("{postbox:%s}:s:%d", r.mailbox, p)
		n, err := r.client.XLen(ctx, key).Result()
		if err != nil {
			return fmt.Errorf("XLEN %s: %w", key, err)
		}
		pend, err := r.client.XPending(ctx, key, "postbox").Result()
		if err != nil {
			return fmt.Errorf("XPENDING %s: %w", key, err)
		}
		if n != 0 || pend.Count != 0 {
			return fmt.Errorf("partition %d still has %d entries, %d of them pending", p, n, pend.Count)
		}
	}
	return nil
}

// leaseOwner returns the pid of the worker whose consumer holds the lease
// of partition p of the mailbox (owners are "host:pid:random"), and the
// lease epoch; 0, 0 when the partition is not leased.
func (r redisStore) leaseOwner(ctx context.Context, p int) (pid int, epoch int64) {
	v, err := r.client.Get(ctx, fmt.Sprintf("{postbox:%s}:lease:%d", r.mailbox, p)).Result()
	if err != nil {
		return 0, 0
	}
	e, owner, _ := strings.Cut(v, ":")
	parts := strings.Split(owner, ":")
	if len(parts) < 3 {
		return 0, 0
	}
	pid, _ = strconv.Atoi(parts[len(parts)-2])
	epoch, _ = strconv.ParseInt(e, 10, 64)
	return pid, epoch
}

// crashScenario describes a run of several workers under a load, some of which
// are SIGKILLed mid-run and replaced.
type crashScenario struct {
	stores
	workers     int // running at once
	kills       int // workers SIGKILLed, each replaced by a new one
	concurrency int
	load        loadRun
	extra       []string // worker flags
}

// scaleAndCrash runs c and checks the outcome exactly.
func scaleAndCrash(t *testing.T, c crashScenario) {
	dir := t.TempDir()
	sink := filepath.Join(dir, "sink.ndjson")
	mb := openMailbox(t, c.mailbox, backend.MailboxOptions{Partitions: c.partitions, CreateTopics: true})
	check := newChecker(t, c.journal, mb, expected(c.load.spec))

	start := time.Now()
	load := c.load.start(t, dir, "load", c.mailbox)
	extra := append([]string{"--concurrency", strconv.Itoa(c.concurrency)}, c.extra...)
	var live []*process
	admin := map[*process]string{}
	started := 0
	startOne := func() {
		started++
		a := testenv.FreeAddr(t)
		w := startWorker(t, dir, fmt.Sprintf("worker-%d", started), workerArgs{mailbox: c.mailbox, journal: c.journal, sink: sink,
			concurrency: 16, admin: a, extra: slices.Concat(serviceFlags, extra)})
		live = append(live, w)
		admin[w] = a
	}
	for range c.workers {
		startOne()
	}
	seed := uint64(time.Now().UnixNano())
	rng := rand.New(rand.NewPCG(seed, 7))
	t.Logf("kill schedule seed %d", seed)
	for range c.kills {
		time.Sleep(time.Duration(1000+rng.IntN(1500)) * time.Millisecond)
		// The victim: a worker busy processing right now, so that the kill
		// lands on work in flight.
		i := -1
		waitfor.Until(t, time.Minute, "a busy worker to kill", func() bool {
			alive(t, live...)
			k := rng.IntN(len(live))
			before := processedOn(admin[live[k]])
			time.Sleep(100 * time.Millisecond)
			if processedOn(admin[live[k]]) > before {
				i = k
			}
			return i >= 0
		})
		victim := live[i]
		done := processedOn(admin[victim])
		victim.kill(t)
		t.Logf("%s SIGKILLed at %s, after processing %v messages", victim.name, time.Since(start).Round(time.Millisecond), done)
		live = append(live[:i], live[i+1:]...)
		startOne()
	}
	load.exit(t, 3*time.Minute)
	t.Logf("load published in %s", time.Since(start).Round(time.Millisecond))
	if err := check.waitExact(3 * time.Minute); err != nil {
		t.Fatal(err)
	}
	t.Logf("counters exact after %s", time.Since(start).Round(time.Millisecond))
	for _, w := range live {
		w.signal(t, syscall.SIGTERM)
	}
	for _, w := range live {
		w.exit(t, time.Minute)
	}
	extraEffects := check.final(t, c.backend, sink, c.kills*c.concurrency, 1+c.kills)
	c.checkDrained(t)
	t.Logf("%d workers, %d SIGKILLed; %d valid and %d poison messages; %d side effects ran twice (bound %d); %s in all",
		c.workers, c.kills, len(check.want.valid), len(check.want.poison), extraEffects, c.kills*c.concurrency,
		time.Since(start).Round(time.Millisecond))
}
