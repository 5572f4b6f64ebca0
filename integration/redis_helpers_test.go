package integration

// Helpers of the end-to-end tests against real servers: redis_test.go and
// postgres_test.go. Every top-level name here starts with svc, so that it
// cannot clash with the helpers of the other test files of this package.

import (
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

	goredis "github.com/redis/go-redis/v9"

	"github.com/postbox-dev/postbox/actorhost"
	"github.com/postbox-dev/postbox/actors/counter"
	"github.com/postbox-dev/postbox/backend"
	"github.com/postbox-dev/postbox/channel"
	"github.com/postbox-dev/postbox/internal/testenv"
	"github.com/postbox-dev/postbox/internal/waitfor"
	"github.com/postbox-dev/postbox/internal/workload"
	"github.com/postbox-dev/postbox/journal"
)

var svcNameChars = regexp.MustCompile(`[^a-z0-9]+`)

// svcName returns a name no other test and no earlier run uses, made of
// lower-case letters, digits and dashes: for mailboxes, namespaces, topics.
func svcName(t *testing.T) string {
	name := strings.Trim(svcNameChars.ReplaceAllString(strings.ToLower(t.Name()), "-"), "-")
	if len(name) > 40 {
		name = name[len(name)-40:]
	}
	return fmt.Sprintf("it-%s-%s", name, strconv.FormatInt(time.Now().UnixNano(), 36))
}

// svcRedisClient connects to addr for inspection; closed when the test ends.
func svcRedisClient(t *testing.T, addr string) *goredis.Client {
	t.Helper()
	c := goredis.NewClient(&goredis.Options{Addr: addr})
	t.Cleanup(func() { c.Close() })
	return c
}

// svcRedisStores returns the URLs of a fresh Redis mailbox and a fresh
// Redis journal namespace. Their keys are deleted when the test ends
// (unless POSTBOX_IT_KEEP is set).
func svcRedisStores(t *testing.T, addr string) (mailboxURL, journalURL, mailbox string) {
	t.Helper()
	mailbox = svcName(t)
	namespace := mailbox + "-j"
	t.Cleanup(func() {
		if os.Getenv("POSTBOX_IT_KEEP") != "" {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		c := goredis.NewClient(&goredis.Options{Addr: addr})
		defer c.Close()
		for _, tag := range []string{mailbox, namespace} {
			iter := c.Scan(ctx, 0, "{postbox:"+tag+"}:*", 1000).Iterator()
			var keys []string
			for iter.Next(ctx) {
				keys = append(keys, iter.Val())
			}
			for len(keys) > 0 {
				n := min(len(keys), 500)
				c.Del(ctx, keys[:n]...)
				keys = keys[n:]
			}
		}
	})
	return "redis://" + addr + "/" + mailbox, "redis://" + addr + "/" + namespace, mailbox
}

// svcRedisDrained checks that every partition stream of mailbox is empty and
// has nothing pending: every message was acked (and so deleted).
func svcRedisDrained(ctx context.Context, c *goredis.Client, mailbox string, partitions int) error {
	for p := range partitions {
		key := fmt.Sprintf("{postbox:%s}:s:%d", mailbox, p)
		n, err := c.XLen(ctx, key).Result()
		if err != nil {
			return fmt.Errorf("XLEN %s: %w", key, err)
		}
		pend, err := c.XPending(ctx, key, "postbox").Result()
		if err != nil {
			return fmt.Errorf("XPENDING %s: %w", key, err)
		}
		if n != 0 || pend.Count != 0 {
			return fmt.Errorf("partition %d still has %d entries, %d of them pending", p, n, pend.Count)
		}
	}
	return nil
}

// svcLeaseOwner returns the pid of the worker whose consumer holds the
// lease of partition p of mailbox (owners are "host:pid:random"), and the
// lease epoch; 0, 0 when the partition is not leased.
func svcLeaseOwner(ctx context.Context, c *goredis.Client, mailbox string, p int) (pid int, epoch int64) {
	v, err := c.Get(ctx, fmt.Sprintf("{postbox:%s}:lease:%d", mailbox, p)).Result()
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

// serviceFlags are the worker flags the service tests share: a checkpoint
// every 10 messages, warnings only.
var serviceFlags = []string{"--checkpoint-every", "10", "--log-level", "warn"}

// svcLoad is a counter (or tally) workload and the rate the producer
// publishes it at.
type svcLoad struct {
	spec workload.Spec
	rate int // messages per second; 0: as fast as possible
}

// start runs `producer load` for the workload in the background.
func (l svcLoad) start(t *testing.T, dir, name, mailbox string) *process {
	t.Helper()
	return startProcess(t, dir, name, producerBin, append([]string{"load", "--mailbox", mailbox}, loadArgs(l.spec, l.rate)...)...)
}

// svcExpect is what workloads must leave behind.
type svcExpect struct {
	states  map[string]counter.State
	valid   map[string]bool // IDs of the messages that must be applied
	effects map[string]bool // IDs of the valid messages that make a side effect: the counter's
	poison  map[string]bool // IDs of the messages that must be dead-lettered
	dups    int             // messages published twice
}

// svcExpected adds up what specs, all published, must produce. A message
// is poison when the actor refuses its payload (no integer "add").
func svcExpected(specs ...workload.Spec) svcExpect {
	e := svcExpect{states: map[string]counter.State{}, valid: map[string]bool{}, effects: map[string]bool{}, poison: map[string]bool{}}
	for _, s := range specs {
		exp, _ := s.Generate(func(m channel.Message) error {
			var p counter.Payload
			switch {
			case json.Unmarshal(m.Payload, &p) != nil || p.Add == nil:
				e.poison[m.ID] = true
			case m.Address.Type == counter.Type:
				e.effects[m.ID] = true
				fallthrough
			default:
				e.valid[m.ID] = true
			}
			return nil
		})
		e.dups += exp.Duplicates
		for a, st := range exp.States {
			sum := e.states[a]
			sum.Value += st.Value
			sum.Applied += st.Applied
			e.states[a] = sum
		}
	}
	return e
}

// svcChecker compares what the workers left in the journal, the dead-letter
// queue and the counter sink with what the workloads must produce.
type svcChecker struct {
	reg  *actorhost.Registry
	j    journal.Journal
	mb   *backend.Mailbox
	want svcExpect
}

func svcNewChecker(t *testing.T, journalURL string, mb *backend.Mailbox, want svcExpect) *svcChecker {
	t.Helper()
	j, err := backend.OpenJournal(context.Background(), journalURL, backend.JournalOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { j.Close() })
	return &svcChecker{reg: actorRegistry(t), j: j, mb: mb, want: want}
}

// waitExact waits until every actor is exact and the dead-letter queue
// holds as many letters as there are poison messages. The error says what
// was still wrong at the deadline, or at once that a message was applied
// twice: no waiting undoes that.
func (c *svcChecker) waitExact(timeout time.Duration) error {
	ctx := context.Background()
	deadline := time.Now().Add(timeout)
	for {
		d := diffStates(ctx, c.reg, c.j, c.want.states)
		envs, err := c.mb.DLQ.List(ctx)
		if d.wrong == 0 && err == nil && len(envs) >= len(c.want.poison) {
			return nil
		}
		if d.over > 0 {
			return fmt.Errorf("of %d actors, %s\n%s", len(c.want.states), d, journalTail(ctx, c.j, d.addr, 12))
		}
		if time.Now().After(deadline) {
			msg := fmt.Sprintf("after %s: of %d actors, %d wrong; %d dead letters (err %v) of %d poison messages",
				timeout, len(c.want.states), d.wrong, len(envs), err, len(c.want.poison))
			if d.wrong > 0 {
				msg += fmt.Sprintf("\n%s\n%s", d, journalTail(ctx, c.j, d.addr, 12))
			}
			return errors.New(msg)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// final checks, once every worker has stopped: every actor exact; the
// dead-letter queue holds exactly the poison messages, from backend, each
// dead-lettered on a permanent error after 1 to maxAttempts counted
// attempts (an attempt counted durably before a crash or a fence counts
// too); every valid counter message made its side effect, under its own
// key, and no other key appears (a tally makes none); and effects ran twice
// at most bound times. It returns how many ran twice.
func (c *svcChecker) final(t *testing.T, backend, sinkPath string, bound, maxAttempts int) int {
	t.Helper()
	ctx := context.Background()
	if d := diffStates(ctx, c.reg, c.j, c.want.states); d.wrong != 0 {
		t.Errorf("after the workers stopped, of %d actors, %s\n%s", len(c.want.states), d, journalTail(ctx, c.j, d.addr, 12))
	}
	envs, err := c.mb.DLQ.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, e := range envs {
		switch {
		case !c.want.poison[e.MessageID]:
			t.Errorf("dead letter %s of message %s (%s: %s) is not a poison message", e.ID, e.MessageID, e.Reason, e.LastError())
		case seen[e.MessageID]:
			t.Errorf("message %s dead-lettered twice", e.MessageID)
		case e.Source.Backend != backend || e.Attempts < 1 || e.Attempts > maxAttempts || e.Reason != "permanent error":
			t.Errorf("dead letter of %s: backend %q, %d attempts, reason %q; want %s, 1 to %d, permanent error",
				e.MessageID, e.Source.Backend, e.Attempts, e.Reason, backend, maxAttempts)
		}
		seen[e.MessageID] = true
	}
	if len(seen) != len(c.want.poison) {
		t.Errorf("%d messages dead-lettered, want the %d poison ones", len(seen), len(c.want.poison))
	}

	lines, err := counter.ReadSink(sinkPath)
	if err != nil {
		t.Fatal(err)
	}
	keys := map[string]bool{}
	for _, l := range lines {
		if id, ok := strings.CutSuffix(l.Key, "#0"); !ok || !c.want.effects[id] {
			t.Errorf("side effect with key %q (%s) is not the effect of a valid counter message", l.Key, l.Actor)
		}
		keys[l.Key] = true
	}
	missing := 0
	for id := range c.want.effects {
		if !keys[actorhost.EffectKey(id, 0)] {
			missing++
		}
	}
	extra := len(lines) - len(keys)
	if missing > 0 || len(keys) != len(c.want.effects) {
		t.Errorf("%d distinct effect keys, want one per valid counter message: %d (%d missing)", len(keys), len(c.want.effects), missing)
	}
	if extra > bound {
		t.Errorf("%d side effects ran twice; at most %d may", extra, bound)
	}
	return extra
}

// svcCrash describes a run of several workers under a load, some of which
// are SIGKILLed mid-run and replaced.
type svcCrash struct {
	mailbox, journal string // URLs
	backend          string // the mailbox's backend, as dead letters name it
	partitions       int    // of the mailbox, created before anything runs
	workers          int    // running at once
	kills            int    // workers SIGKILLed, each replaced by a new one
	concurrency      int
	load             svcLoad
	extra            []string                    // worker flags
	drained          func(context.Context) error // nil once every message is acked
}

// svcScaleAndCrash runs c and checks the outcome exactly.
func svcScaleAndCrash(t *testing.T, c svcCrash) {
	dir := t.TempDir()
	sink := filepath.Join(dir, "sink.ndjson")
	mb, err := backend.OpenMailbox(context.Background(), c.mailbox, backend.MailboxOptions{Partitions: c.partitions, CreateTopics: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mb.Close() })
	check := svcNewChecker(t, c.journal, mb, svcExpected(c.load.spec))

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
	if c.drained != nil {
		if err := c.drained(context.Background()); err != nil {
			t.Errorf("mailbox not drained after the workers stopped: %v", err)
		}
	}
	t.Logf("%d workers, %d SIGKILLed; %d valid and %d poison messages; %d side effects ran twice (bound %d); %s in all",
		c.workers, c.kills, len(check.want.valid), len(check.want.poison), extraEffects, c.kills*c.concurrency,
		time.Since(start).Round(time.Millisecond))
}

// processedOn sums postbox_messages_processed_total over workers' admin
// addresses (a worker that does not answer counts 0).
func processedOn(admins ...string) float64 {
	var sum float64
	for _, a := range admins {
		v, _ := metric(a, "postbox_messages_processed_total")
		sum += v
	}
	return sum
}

// svcServices runs scripts/services.sh verb service for the server the
// tests use: the port comes from REDIS_ADDR or POSTGRES_DSN, the state
// directory from POSTBOX_SERVICES_DIR (the script's default when unset).
type svcServices struct {
	service string // redis or postgres
	env     []string
}

// svcRestartable returns a handle on the server of service, or skips the
// test (fails under CI) when scripts/services.sh does not manage it with
// this environment: the test must not restart a server it cannot start
// again.
func svcRestartable(t *testing.T, service, hostPort string) svcServices {
	t.Helper()
	_, port, err := net.SplitHostPort(hostPort)
	if err != nil {
		t.Fatalf("%s address %q: %v", service, hostPort, err)
	}
	s := svcServices{service: service, env: os.Environ()}
	s.env = append(s.env, strings.ToUpper(service)+"_PORT="+port)
	if out, err := s.run("status"); err != nil {
		msg := fmt.Sprintf("this test restarts %s, and scripts/services.sh does not manage the server on port %s "+
			"(set POSTBOX_SERVICES_DIR to the directory it was started with): %v %s", service, port, err, out)
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return s
}

func (s svcServices) run(verb string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "../scripts/services.sh", verb, s.service)
	cmd.Env = s.env
	out, err := cmd.CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

// restart stops the server, keeps it down for down, and starts it again
// (same data directory). It returns how long the server was unreachable.
func (s svcServices) restart(t *testing.T, down time.Duration) time.Duration {
	t.Helper()
	begin := time.Now()
	if out, err := s.run("stop"); err != nil {
		t.Fatalf("services.sh stop %s: %v\n%s", s.service, err, out)
	}
	time.Sleep(down)
	if out, err := s.run("start"); err != nil {
		t.Fatalf("services.sh start %s: %v\n%s", s.service, err, out)
	}
	return time.Since(begin)
}

// svcRestart describes a run in which the server behind the mailbox or the
// journal is restarted while two workers are busy.
type svcRestart struct {
	mailbox, journal string // URLs
	backend          string // the mailbox's backend, as dead letters name it
	partitions       int
	server           svcServices
	down             time.Duration // how long the server stays stopped
	before, after    svcLoad       // published before the workers start, and after the restart
	extra            []string      // worker flags
	drained          func(context.Context) error
}

// svcRestartUnderLoad runs r. The workers must ride the outage out on
// their own: every counter exact while they still run. Then, whatever
// happened, they are stopped and, if counters are still wrong, a fresh
// worker finishes: nothing acknowledged may have been lost, so the end
// state must be exact.
func svcRestartUnderLoad(t *testing.T, r svcRestart) {
	dir := t.TempDir()
	sink := filepath.Join(dir, "sink.ndjson")
	mb, err := backend.OpenMailbox(context.Background(), r.mailbox, backend.MailboxOptions{Partitions: r.partitions})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mb.Close() })
	check := svcNewChecker(t, r.journal, mb, svcExpected(r.before.spec, r.after.spec))

	// Both workers hold partitions before the load comes, so that both are
	// busy when the server restarts.
	admins := []string{testenv.FreeAddr(t), testenv.FreeAddr(t)}
	var workers []*process
	for i, admin := range admins {
		workers = append(workers, startWorker(t, dir, fmt.Sprintf("worker-%d", i+1), workerArgs{mailbox: r.mailbox, journal: r.journal,
			sink: sink, concurrency: 16, admin: admin, extra: slices.Concat(serviceFlags, r.extra)}))
	}
	waitfor.Until(t, time.Minute, "both workers to hold partitions, all of them between them", func() bool {
		alive(t, workers...)
		a, _ := metric(admins[0], "postbox_partitions_claimed")
		b, _ := metric(admins[1], "postbox_partitions_claimed")
		return a >= 1 && b >= 1 && int(a+b) == mb.Partitions
	})
	r.before.start(t, dir, "load-before", r.mailbox).exit(t, 2*time.Minute)
	waitfor.Until(t, time.Minute, "both workers busy and a fifth of the messages processed", func() bool {
		alive(t, workers...)
		return processedOn(admins[0]) >= 100 && processedOn(admins[1]) >= 100 &&
			processedOn(admins...) >= float64(r.before.spec.Count)/5
	})
	if done := processedOn(admins...); done > float64(r.before.spec.Count)*0.8 {
		t.Fatalf("%v of %d messages processed before both workers were busy: publish more before the restart", done, r.before.spec.Count)
	}
	atStop := []float64{processedOn(admins[0]), processedOn(admins[1])}
	outage := r.server.restart(t, r.down)
	t.Logf("%s restarted after the workers processed %v messages; unreachable for %s", r.server.service, atStop, outage.Round(time.Millisecond))
	alive(t, workers...)
	r.after.start(t, dir, "load-after", r.mailbox).exit(t, 2*time.Minute)

	exactLive := check.waitExact(90 * time.Second)
	if exactLive != nil {
		t.Errorf("the workers that lived through the restart did not finish the work: %v", exactLive)
	}
	for _, w := range workers {
		t.Logf("%s: %d \"outcome lookup failed; retrying\", %d \"journal append failed; retrying\", %d \"activating actor failed\" log lines",
			w.name, w.count("outcome lookup failed"), w.count("journal append failed"), w.count("activating actor failed"))
	}
	alive(t, workers...)
	for _, w := range workers {
		w.stop(t, time.Minute)
	}
	if exactLive != nil {
		// Durability apart from liveness: what was acknowledged is in the
		// journal, and what was not comes again.
		w := startWorker(t, dir, "worker-fresh", workerArgs{mailbox: r.mailbox, journal: r.journal, sink: sink,
			concurrency: 16, extra: slices.Concat(serviceFlags, r.extra)})
		if err := check.waitExact(2 * time.Minute); err != nil {
			t.Fatalf("a fresh worker could not finish either: %v", err)
		}
		t.Logf("a fresh worker started after the others stopped made every counter exact")
		w.stop(t, time.Minute)
	}
	// Messages in flight at the outage may make their effect again when
	// they are redelivered: at most one per handler running at once.
	extra := check.final(t, r.backend, sink, 2*16, 2)
	if r.drained != nil {
		if err := r.drained(context.Background()); err != nil {
			t.Errorf("mailbox not drained after the workers stopped: %v", err)
		}
	}
	t.Logf("%d side effects ran twice", extra)
}
