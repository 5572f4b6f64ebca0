package simulation

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/postbox-dev/postbox/actorhost"
	"github.com/postbox-dev/postbox/channel"
	"github.com/postbox-dev/postbox/channel/memory"
	"github.com/postbox-dev/postbox/journal"
	jmemory "github.com/postbox-dev/postbox/journal/memory"
	"go.uber.org/zap"
)

var (
	seeds     = flag.Int("sim.seeds", 0, "how many seeds to run (default: a CI set, fewer under -race)")
	firstSeed = flag.Uint64("sim.first", 1, "the first seed of the set")
	oneSeed   = flag.Uint64("sim.seed", 0, "run only this seed")
	verbose   = flag.Bool("sim.log", false, "log what the hosts do")
)

// TestSimulation runs the host under faults for a set of seeds and holds
// each run against the model. A failure prints the command that replays
// its seed.
func TestSimulation(t *testing.T) {
	n, first := *seeds, *firstSeed
	if n == 0 {
		n = 1000
		if raceEnabled {
			n = 30
		}
	}
	if *oneSeed != 0 {
		n, first = 1, *oneSeed
	}
	var runs, lifecycles, crashes, faults atomic.Int64
	for seed := first; seed < first+uint64(n); seed++ {
		var st runStats
		synctest.Test(t, func(t *testing.T) {
			problems := run(seed, &st)
			if len(problems) > 0 {
				if len(problems) > 10 {
					problems = append(problems[:10], fmt.Sprintf("… and %d more", len(problems)-10))
				}
				t.Errorf("seed %d broke the promise:\n  %s\nreplay it: go test ./simulation -run 'TestSimulation$' -sim.seed %d -v",
					seed, strings.Join(problems, "\n  "), seed)
			}
		})
		runs.Add(1)
		lifecycles.Add(st.published.Load())
		crashes.Add(st.crashes.Load())
		faults.Add(st.journalFaults.Load() + st.ambiguous.Load() + st.revokes.Load() + st.losses.Load() + st.lostAcks.Load())
		if t.Failed() {
			break
		}
	}
	t.Logf("%d runs, %d message lifecycles checked; %d host crashes, %d other faults injected",
		runs.Load(), lifecycles.Load(), crashes.Load(), faults.Load())
}

// runStats counts what one run did.
type runStats struct {
	published, crashes, revokes, losses atomic.Int64
	journalFaults, ambiguous, lostAcks  atomic.Int64
}

// order is a message's instructions to the simulated actors.
type order struct {
	Fail  int  `json:"fail,omitempty"`  // fail attempts 1..Fail (retryably)
	Panic bool `json:"panic,omitempty"` // panic on attempt 1
	Perm  bool `json:"perm,omitempty"`  // a permanent error
	// Until fails every attempt made before this time (Unix ms): an outage
	// of something the handler needs. Whether the message outlives its
	// attempts depends on timing, so either outcome is right, but not both.
	Until int64 `json:"until,omitempty"`
	// UntilPerm makes the outage's failures permanent errors: a refusal
	// from outside that a later try may not meet.
	UntilPerm bool `json:"until_perm,omitempty"`
	// Kill kills the process running the handler, on every attempt: it
	// must end in the DLQ after MaxAttempts counted attempts.
	Kill bool `json:"kill,omitempty"`
}

// seen is every simulated actor's state: the messages it applied, in order.
type seen struct {
	Applied []string `json:"applied"`
}

// service is the outside world the effect actors call.
type service struct {
	mu   sync.Mutex
	runs map[string]int // executions by idempotency key
}

func (s *service) call(key string) {
	s.mu.Lock()
	s.runs[key]++
	s.mu.Unlock()
}

// behave follows m's orders; die kills the process running the handler.
func behave(c *actorhost.Context, m actorhost.Message, die func()) (order, error) {
	var o order
	if err := json.Unmarshal(m.Payload, &o); err != nil {
		return o, actorhost.Permanent(err)
	}
	switch {
	case o.Kill:
		die()
		return o, errors.New("the process died by design")
	case o.Perm:
		return o, actorhost.Permanent(errors.New("refused by design"))
	case o.Panic && c.Attempt() == 1:
		panic("by design")
	case c.Attempt() <= o.Fail:
		return o, fmt.Errorf("failure %d by design", c.Attempt())
	case time.Now().UnixMilli() < o.Until && o.UntilPerm:
		return o, actorhost.Permanent(errors.New("refused during an outage by design"))
	case time.Now().UnixMilli() < o.Until:
		return o, errors.New("outage by design")
	}
	return o, nil
}

// registry registers the simulated actors; die kills the process whose
// host runs them (nil: replays for the checker, which never meet a Kill).
func registry(svc *service, die func()) *actorhost.Registry {
	reg := actorhost.NewRegistry()
	// pure: no side effect; nothing it does waits for the journal.
	actorhost.Register(reg, "pure", func(c *actorhost.Context, s *seen, m actorhost.Message) error {
		if _, err := behave(c, m, die); err != nil {
			return err
		}
		s.Applied = append(s.Applied, m.ID)
		return nil
	})
	// effect: two side effects, then the state change.
	actorhost.Register(reg, "effect", func(c *actorhost.Context, s *seen, m actorhost.Message) error {
		for _, name := range []string{"charge", "notify"} {
			if _, err := c.SideEffect(name, func(_ context.Context, key string) ([]byte, error) {
				svc.call(key)
				return []byte(key), nil
			}); err != nil {
				return err
			}
		}
		if _, err := behave(c, m, die); err != nil {
			return err
		}
		s.Applied = append(s.Applied, m.ID)
		return nil
	})
	return reg
}

// plan is one seed's inputs and settings, all drawn before anything runs.
type plan struct {
	partitions, concurrency, checkpointEvery, maxAttempts int
	maxActors, keepCheckpoints                            int
	idleTimeout                                           time.Duration
	crashLoops                                            bool // some messages kill their process every time
	faults                                                journalFaults
	lostAcks                                              float64 // per Ack call
	// stepCrashes is the chance, per step of a given kind, that the host
	// dies right after it (or before an ack), at most crashSteps times.
	stepCrashes map[string]float64
	crashSteps  int
	msgs        []channel.Message
	orders      map[string]order
	// deadAs is the dead-letter reason of the messages no handler may run:
	// an unknown type, an actor whose journal does not replay, an address
	// or ID that breaks the identifier limits (injected past the
	// Publisher's checks, as kcat or XADD would write them).
	deadAs map[string]string
	dups   map[int]bool // indexes published again later
	events []event
}

// The actors whose journals are corrupted before the run starts.
var brokenActors = []channel.Address{{Type: "pure", ID: "broken"}, {Type: "effect", ID: "broken"}}

// publishedAt is when the i-th message is first published, from the
// start of the run.
func publishedAt(i int) time.Duration {
	// The publisher pauses 0, 1, … 6 ms in turn after each message.
	return time.Duration(i/7*21+(i%7)*(i%7-1)/2) * time.Millisecond
}

// envelopeAddress is a's form in a dead letter: "" for no address.
func envelopeAddress(a channel.Address) string {
	if a == (channel.Address{}) {
		return ""
	}
	return a.String()
}

// badIdentity is a message that breaks the identifier limits, and the
// reason the host must dead-letter it with.
func badIdentity(rng *rand.Rand, id string, a channel.Address) (channel.Message, string) {
	switch rng.IntN(4) {
	case 0:
		return channel.Message{ID: id}, "no actor address"
	case 1:
		a.ID += "\x00nul"
		return channel.Message{ID: id, Address: a}, "invalid address"
	case 2:
		return channel.Message{ID: id + strings.Repeat("x", channel.MaxIdentifierLen), Address: a}, "invalid message ID"
	}
	return channel.Message{ID: id + "\xff", Address: a}, "invalid message ID"
}

type event struct {
	at   time.Duration
	kind string // crash, revoke, lose
	p    int32
}

func newPlan(seed uint64) plan {
	rng := rand.New(rand.NewPCG(seed, 0x5eed))
	began := time.Now() // the same in every bubble
	pl := plan{
		partitions: 1 + rng.IntN(4), concurrency: 1 + rng.IntN(8),
		checkpointEvery: 1 + rng.IntN(10), maxAttempts: 4 + rng.IntN(4),
		keepCheckpoints: 1 + rng.IntN(3),
		orders:          map[string]order{}, deadAs: map[string]string{}, dups: map[int]bool{},
	}
	_ = rng.IntN(2) // once whether the mailbox counted deliveries: drawn still, so each seed keeps its plan
	// Passivation pressure: actors dropped from memory while idle, or
	// beyond a small cap, and activated again from the journal.
	pl.idleTimeout = []time.Duration{20 * time.Millisecond, 300 * time.Millisecond, 5 * time.Second, time.Hour}[rng.IntN(4)]
	if rng.IntN(2) == 0 {
		pl.maxActors = 1 + rng.IntN(6)
	}
	if rng.IntN(4) > 0 {
		pl.faults = journalFaults{transient: rng.Float64() * 0.05, ambiguous: rng.Float64() * 0.03, slow: rng.Float64() * 0.2}
	}
	if rng.IntN(3) == 0 {
		pl.lostAcks = rng.Float64() * 0.05
	}
	pl.stepCrashes = map[string]float64{}
	for _, c := range []struct {
		step string
		rate float64
	}{{stepDeadLetter, 0.3}, {stepAppend, 0.003}, {stepAck, 0.003}} {
		if rng.IntN(2) == 0 {
			pl.stepCrashes[c.step] = c.rate
		}
	}
	pl.crashSteps = rng.IntN(4)
	pl.crashLoops = rng.IntN(4) == 0
	actors := 1 + rng.IntN(8)
	count := 200 + rng.IntN(1600)
	for i := range count {
		typ := "pure"
		if rng.IntN(2) == 0 {
			typ = "effect"
		}
		a := channel.Address{Type: typ, ID: fmt.Sprintf("a%d", rng.IntN(actors))}
		id := fmt.Sprintf("m%d", i)
		switch rng.IntN(100) {
		case 0:
			a.Type = "ghost" // registered nowhere
			pl.deadAs[id] = "unknown actor type"
		case 1:
			a = brokenActors[rng.IntN(len(brokenActors))]
			pl.deadAs[id] = "actor cannot be activated"
		case 2:
			m, reason := badIdentity(rng, id, a)
			m.Payload = []byte("{}")
			pl.msgs = append(pl.msgs, m)
			pl.deadAs[m.ID] = reason
			if rng.IntN(3) == 0 {
				pl.dups[i] = true
			}
			continue
		}
		var o order
		if pl.crashLoops && rng.IntN(300) == 0 {
			o.Kill = true
		}
		switch r := rng.IntN(40); {
		case r == 0:
			o.Perm = true
		case r == 1:
			o.Panic = true
		case r < 4:
			o.Fail = 1 + rng.IntN(pl.maxAttempts+1) // sometimes beyond MaxAttempts
		case r < 5:
			// From before it is published to when it has likely run out
			// of attempts, and a crash after that runs it again.
			o.Until = began.Add(time.Duration(500+rng.IntN(6000)) * time.Millisecond).UnixMilli()
		case r < 6:
			// Refused for good on its first attempt or so; a try a little
			// later would succeed.
			o.Until = began.Add(publishedAt(i) + time.Duration(1+rng.IntN(40))*time.Millisecond).UnixMilli()
			o.UntilPerm = true
		}
		payload, _ := json.Marshal(o)
		pl.msgs = append(pl.msgs, channel.Message{ID: id, Address: a, Payload: payload})
		pl.orders[id] = o
		if rng.IntN(10) == 0 {
			pl.dups[i] = true
		}
	}
	for range rng.IntN(4) {
		pl.events = append(pl.events, event{at: time.Duration(rng.IntN(6000)) * time.Millisecond, kind: "crash"})
	}
	for range rng.IntN(4) {
		kind := "revoke"
		if rng.IntN(2) == 0 {
			kind = "lose"
		}
		pl.events = append(pl.events, event{at: time.Duration(rng.IntN(6000)) * time.Millisecond, kind: kind, p: int32(rng.IntN(pl.partitions))})
	}
	slices.SortStableFunc(pl.events, func(a, b event) int { return int(a.at - b.at) })
	return pl
}

// incarnation is one worker process: a host with its own views of the
// shared stores.
type incarnation struct {
	host     *actorhost.Host
	consumer *memory.Consumer
	j        *faultyJournal
}

// The steps a host may die right after (before, for an ack).
const (
	stepDeadLetter = "dead-letter stored"
	stepAppend     = "append landed"
	stepAck        = "ack"
)

// run runs one seed and returns what broke the promise.
func run(seed uint64, st *runStats) []string {
	pl := newPlan(seed)
	d := newDice(seed)
	mb := memory.New(memory.Options{Name: "sim", Partitions: pl.partitions})
	defer mb.Close()
	shared := jmemory.New(jmemory.Options{KeepCheckpoints: pl.keepCheckpoints})
	svc := &service{runs: map[string]int{}}
	reg := registry(svc, nil)
	if err := corrupt(shared, pl.partitions); err != nil {
		return []string{err.Error()}
	}
	acks := &lostAcks{dice: d, rate: pl.lostAcks, parts: map[int32]bool{}}

	var pmu sync.Mutex
	var problems []string
	problem := func(s string) {
		pmu.Lock()
		problems = append(problems, s)
		pmu.Unlock()
	}
	// A host dies at a step at once (its stores refuse it from then on);
	// the reaper then stops it as a crash would, and starts another.
	var (
		crashMu     sync.Mutex
		crashesLeft = pl.crashSteps
		crashesOver bool // the run is ending: nobody dies any more
		reap        = make(chan *incarnation)
		reaping     int
		hostsMu     sync.Mutex
		hosts       []*incarnation
		start       func() *incarnation
		kill        func(*incarnation)
		stepCrashAt func(inc *incarnation) func(step, key string) bool
		replaceHost = func(old *incarnation) {
			hostsMu.Lock()
			defer hostsMu.Unlock()
			for i, inc := range hosts {
				if inc == old {
					hosts[i] = start()
				}
			}
		}
	)
	stepCrashAt = func(inc *incarnation) func(step, key string) bool {
		return func(step, key string) bool {
			rate := pl.stepCrashes[step]
			if rate == 0 || inc.j.dead.Load() || d.roll("crash|"+step+"|"+key) >= rate {
				return false
			}
			crashMu.Lock()
			if crashesLeft <= 0 || inc.j.dead.Load() {
				crashMu.Unlock()
				return false
			}
			crashesLeft--
			reaping++
			inc.j.kill()
			crashMu.Unlock()
			go func() { reap <- inc }() // never block the step: it may hold a host's lock
			return true
		}
	}
	// die kills inc at once, whatever the budget: a message that kills
	// its process on every attempt.
	die := func(inc *incarnation) {
		crashMu.Lock()
		if inc.j.dead.Load() || crashesOver {
			crashMu.Unlock()
			return
		}
		reaping++
		inc.j.kill()
		crashMu.Unlock()
		go func() { reap <- inc }()
	}
	go func() {
		for inc := range reap {
			st.crashes.Add(1)
			kill(inc)
			time.Sleep(100 * time.Millisecond)
			replaceHost(inc)
			crashMu.Lock()
			reaping--
			crashMu.Unlock()
		}
	}()
	start = func() *incarnation {
		inc := &incarnation{consumer: mb.Consumer(),
			j: &faultyJournal{Journal: shared, dice: d, faults: pl.faults, stats: st}}
		crashAt := stepCrashAt(inc)
		inc.j.crashAt = crashAt
		h, err := actorhost.New(actorhost.Config{
			Registry: registry(svc, func() { die(inc) }), Journal: inc.j, Logger: logger(),
			Consumer:    checkedConsumer{Consumer: inc.consumer, j: shared, dlq: mb.DLQ(), lost: acks, crashAt: crashAt, fault: problem},
			DeadLetters: deadLetters{Writer: mb.DLQ(), dead: &inc.j.dead, crashAt: crashAt},
			Concurrency: pl.concurrency, CheckpointEvery: pl.checkpointEvery, MaxAttempts: pl.maxAttempts,
			IdleTimeout: pl.idleTimeout, MaxActors: pl.maxActors,
			BackoffInitial: 10 * time.Millisecond, BackoffMax: time.Second, DrainTimeout: time.Second,
		})
		if err != nil {
			panic(err)
		}
		inc.host = h // before Start: the host may die at a step at once
		h.Start(context.Background())
		return inc
	}
	kill = func(inc *incarnation) {
		inc.j.kill()
		inc.consumer.Crash()
		ctx, cancel := context.WithCancel(context.Background())
		cancel() // abandoned, not stopped: nothing more is written or acked
		inc.host.Stop(ctx)
	}
	hosts = []*incarnation{start(), start()}

	// Publish over the first seconds; duplicates again later.
	pub := mb.Publisher()
	send := func(m channel.Message) {
		var err error
		if _, bad := pl.deadAs[m.ID]; bad && checkIdentity(m) != nil {
			err = mb.Inject(m)
		} else {
			err = pub.Publish(context.Background(), m)
		}
		if err != nil {
			problem(fmt.Sprintf("publish %q: %v", m.ID, err))
		}
		st.published.Add(1)
	}
	go func() {
		for i, m := range pl.msgs {
			send(m)
			time.Sleep(publishedAt(i+1) - publishedAt(i))
		}
		for i, m := range pl.msgs {
			if pl.dups[i] {
				send(m)
			}
		}
	}()
	began := time.Now()
	for _, ev := range pl.events {
		time.Sleep(max(ev.at-time.Since(began), 0))
		switch ev.kind {
		case "crash":
			hostsMu.Lock()
			victim := hosts[int(d.roll("victim")*float64(len(hosts)))]
			hostsMu.Unlock()
			crashMu.Lock()
			dead := victim.j.dead.Load() // died at a step: the reaper has it
			victim.j.kill()
			crashMu.Unlock()
			if !dead {
				st.crashes.Add(1)
				kill(victim)
				time.Sleep(100 * time.Millisecond)
				replaceHost(victim)
			}
		case "revoke":
			st.revokes.Add(1)
			mb.Revoke(ev.p)
		case "lose":
			st.losses.Add(1)
			mb.Lose(ev.p)
		}
	}

	// Liveness: everything settles within bounded virtual time.
	// An ack lost on its way leaves its message to the partition's next
	// claim, as a restart or a lease expiry would bring: once nothing else
	// moves, the partitions that lost acks are handed over.
	want := len(pl.msgs) + len(pl.dups)
	deadline := time.Now().Add(10 * time.Minute)
	lastPending, quietSince := -1, time.Now()
	for st.published.Load() < int64(want) || mb.Pending() > 0 {
		if n := mb.Pending(); n != lastPending {
			lastPending, quietSince = n, time.Now()
		} else if time.Since(quietSince) > 5*time.Second {
			for _, p := range acks.take() {
				st.revokes.Add(1)
				mb.Revoke(p)
			}
			quietSince = time.Now()
		}
		if time.Now().After(deadline) {
			problem(fmt.Sprintf("not settled after 10 minutes: %d messages unacked", mb.Pending()))
			if *verbose {
				buf := make([]byte, 1<<20)
				fmt.Printf("%s\n", buf[:runtime.Stack(buf, true)])
			}
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	// No more crashes; let the reaper finish.
	crashMu.Lock()
	crashesLeft, crashesOver = 0, true
	crashMu.Unlock()
	for {
		crashMu.Lock()
		n := reaping
		crashMu.Unlock()
		if n == 0 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	close(reap)
	for _, inc := range hosts {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		if err := inc.host.Stop(ctx); err != nil {
			problem(fmt.Sprintf("stop: %v", err))
		}
		cancel()
	}
	disruptions := int(st.crashes.Load() + st.revokes.Load() + st.losses.Load())
	st.lostAcks.Add(acks.count.Load())
	problems = append(problems, check(pl, reg, shared, mb, svc, disruptions)...)
	return problems
}

func logger() *zap.Logger {
	if *verbose {
		return zap.NewExample()
	}
	return nil
}

// check holds the stores after a run against the model: every message is
// applied exactly once, in per-actor publish order, or dead-lettered
// exactly once with the reason its orders call for, never both; each has
// one outcome in the journal; dead letters keep the message byte-exact;
// and each side effect of an applied message ran at least once and at most
// once more per disruption (crash, revoked or lost claim).
func check(pl plan, reg *actorhost.Registry, j journal.Journal, mb *memory.Mailbox, svc *service, disruptions int) []string {
	ctx := context.Background()
	var problems []string
	bad := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }

	envs, err := mb.DLQ().List(ctx)
	if err != nil {
		return []string{err.Error()}
	}
	dead := map[string]string{}
	published := map[string]channel.Message{}
	for _, m := range pl.msgs {
		published[m.ID] = m
	}
	for _, e := range envs {
		if _, dup := dead[e.MessageID]; dup {
			bad("%q is in the DLQ twice", e.MessageID)
		}
		dead[e.MessageID] = e.Reason
		m, ok := published[e.MessageID]
		switch {
		case !ok:
			bad("the DLQ holds %q, which was never published", e.MessageID)
		case e.Address != envelopeAddress(m.Address) || !bytes.Equal(e.Payload, m.Payload):
			bad("%q dead-lettered as %q with payload %q, published to %+v with %q", e.MessageID, e.Address, e.Payload, m.Address, m.Payload)
		}
	}
	byActor := map[channel.Address][]string{}
	for _, m := range pl.msgs {
		if checkIdentity(m) != nil {
			// Journaled under a key of the host's own: only the DLQ shows it.
			if reason := dead[m.ID]; reason != pl.deadAs[m.ID] {
				bad("%q (address %+v) dead-lettered with reason %q, want %q", m.ID, m.Address, reason, pl.deadAs[m.ID])
			}
			continue
		}
		byActor[m.Address] = append(byActor[m.Address], m.ID)
	}
	for addr, ids := range byActor {
		// Exactly one outcome per message in the journal.
		outcomes := map[string]int{}
		j.Read(ctx, addr.String(), 1, func(e journal.Entry) error {
			if e.Kind.IsOutcome() {
				outcomes[e.MsgID]++
			}
			return nil
		})
		var s seen
		if r, err := reg.Replay(ctx, j, addr, actorhost.ReplayOptions{}); err == nil {
			json.Unmarshal(r.State, &s)
		} else if addr.Type != "ghost" && !slices.Contains(brokenActors, addr) {
			bad("%s does not replay: %v", addr, err)
			continue
		}
		var want []string
		for _, id := range ids {
			o := pl.orders[id]
			reason, isDead := dead[id]
			if outcomes[id] != 1 {
				bad("%s of %s has %d outcomes in the journal, want 1", id, addr, outcomes[id])
			}
			switch expected, ok := pl.deadAs[id]; {
			case ok:
				if reason != expected {
					bad("%s of %s dead-lettered with reason %q, want %q", id, addr, reason, expected)
				}
			case o.Kill:
				if reason != "attempts exhausted" {
					bad("%s of %s kills its process every time, but dead-lettered %q", id, addr, reason)
				}
			case o.Perm:
				// A host that died during every attempt of it (a crash loop
				// of another message on the same host) exhausts its
				// counted attempts before its handler ever ran.
				if reason != "permanent error" && (reason != "attempts exhausted" || disruptions == 0) {
					bad("%s of %s: permanent error, but dead-lettered %q", id, addr, reason)
				}
			case o.Fail >= pl.maxAttempts:
				if reason != "attempts exhausted" {
					bad("%s of %s fails every attempt, but dead-lettered %q", id, addr, reason)
				}
			case o.Until != 0:
				if isDead && reason != "attempts exhausted" && reason != "permanent error" {
					bad("%s of %s fails during an outage, but dead-lettered %q", id, addr, reason)
				}
			case isDead && disruptions == 0:
				bad("%s of %s dead-lettered (%q) in a run without crashes or lost claims", id, addr, reason)
			}
			if !isDead {
				want = append(want, id)
			}
		}
		if !slices.Equal(s.Applied, want) {
			bad("%s applied %v, want %v (exactly once each, in publish order)", addr, s.Applied, want)
		}
		if addr.Type == "effect" {
			for _, id := range want {
				for i := range 2 {
					key := actorhost.EffectKey(id, i)
					if n := svc.runs[key]; n < 1 || n > 1+disruptions {
						bad("effect %s ran %d times, want 1 to %d", key, n, 1+disruptions)
					}
				}
			}
		}
	}
	return problems
}
