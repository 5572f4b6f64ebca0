package simulation

import (
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
		faults.Add(st.journalFaults.Load() + st.ambiguous.Load() + st.revokes.Load() + st.losses.Load())
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
	journalFaults, ambiguous            atomic.Int64
}

// order is a message's instructions to the simulated actors.
type order struct {
	Fail  int  `json:"fail,omitempty"`  // fail attempts 1..Fail (retryably)
	Panic bool `json:"panic,omitempty"` // panic on attempt 1
	Perm  bool `json:"perm,omitempty"`  // a permanent error
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

func behave(c *actorhost.Context, m actorhost.Message) (order, error) {
	var o order
	if err := json.Unmarshal(m.Payload, &o); err != nil {
		return o, actorhost.Permanent(err)
	}
	switch {
	case o.Perm:
		return o, actorhost.Permanent(errors.New("refused by design"))
	case o.Panic && c.Attempt() == 1:
		panic("by design")
	case c.Attempt() <= o.Fail:
		return o, fmt.Errorf("failure %d by design", c.Attempt())
	}
	return o, nil
}

func registry(svc *service) *actorhost.Registry {
	reg := actorhost.NewRegistry()
	// pure: no side effect; nothing it does waits for the journal.
	actorhost.Register(reg, "pure", func(c *actorhost.Context, s *seen, m actorhost.Message) error {
		if _, err := behave(c, m); err != nil {
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
		if _, err := behave(c, m); err != nil {
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
	countDeliveries                                       bool
	faults                                                journalFaults
	msgs                                                  []channel.Message
	orders                                                map[string]order
	dups                                                  map[int]bool // indexes published again later
	events                                                []event
}

type event struct {
	at   time.Duration
	kind string // crash, revoke, lose
	p    int32
}

func newPlan(seed uint64) plan {
	rng := rand.New(rand.NewPCG(seed, 0x5eed))
	pl := plan{
		partitions: 1 + rng.IntN(4), concurrency: 1 + rng.IntN(8),
		checkpointEvery: 1 + rng.IntN(10), maxAttempts: 4 + rng.IntN(4),
		countDeliveries: rng.IntN(2) == 0,
		orders:          map[string]order{}, dups: map[int]bool{},
	}
	if rng.IntN(4) > 0 {
		pl.faults = journalFaults{transient: rng.Float64() * 0.05, ambiguous: rng.Float64() * 0.03, slow: rng.Float64() * 0.2}
	}
	actors := 1 + rng.IntN(8)
	count := 200 + rng.IntN(1600)
	for i := range count {
		typ := "pure"
		if rng.IntN(2) == 0 {
			typ = "effect"
		}
		a := channel.Address{Type: typ, ID: fmt.Sprintf("a%d", rng.IntN(actors))}
		var o order
		switch r := rng.IntN(40); {
		case r == 0:
			o.Perm = true
		case r == 1:
			o.Panic = true
		case r < 4:
			o.Fail = 1 + rng.IntN(pl.maxAttempts+1) // sometimes beyond MaxAttempts
		}
		id := fmt.Sprintf("m%d", i)
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

// run runs one seed and returns what broke the promise.
func run(seed uint64, st *runStats) []string {
	pl := newPlan(seed)
	d := newDice(seed)
	mb := memory.New(memory.Options{Name: "sim", Partitions: pl.partitions, CountDeliveries: pl.countDeliveries})
	defer mb.Close()
	shared := jmemory.New(jmemory.Options{})
	svc := &service{runs: map[string]int{}}
	reg := registry(svc)

	var pmu sync.Mutex
	var problems []string
	problem := func(s string) {
		pmu.Lock()
		problems = append(problems, s)
		pmu.Unlock()
	}
	start := func() *incarnation {
		inc := &incarnation{consumer: mb.Consumer(),
			j: &faultyJournal{Journal: shared, dice: d, faults: pl.faults, stats: st}}
		h, err := actorhost.New(actorhost.Config{
			Registry: reg, Journal: inc.j, Mailbox: "sim", Logger: logger(),
			Consumer:    checkedConsumer{Consumer: inc.consumer, j: shared, fault: problem},
			DeadLetters: deadLetters{Writer: mb.DLQ(), dead: &inc.j.dead},
			Concurrency: pl.concurrency, CheckpointEvery: pl.checkpointEvery, MaxAttempts: pl.maxAttempts,
			BackoffInitial: 10 * time.Millisecond, BackoffMax: time.Second, DrainTimeout: time.Second,
		})
		if err != nil {
			panic(err)
		}
		h.Start(context.Background())
		inc.host = h
		return inc
	}
	kill := func(inc *incarnation) {
		inc.j.kill()
		inc.consumer.Crash()
		ctx, cancel := context.WithCancel(context.Background())
		cancel() // abandoned, not stopped: nothing more is written or acked
		inc.host.Stop(ctx)
	}
	hosts := []*incarnation{start(), start()}

	// Publish over the first seconds; duplicates again later.
	pub := mb.Publisher()
	go func() {
		for i, m := range pl.msgs {
			if err := pub.Publish(context.Background(), m); err != nil {
				problem(fmt.Sprintf("publish %s: %v", m.ID, err))
			}
			st.published.Add(1)
			time.Sleep(time.Duration(i%7) * time.Millisecond)
		}
		for i, m := range pl.msgs {
			if pl.dups[i] {
				pub.Publish(context.Background(), m)
				st.published.Add(1)
			}
		}
	}()
	began := time.Now()
	for _, ev := range pl.events {
		time.Sleep(max(ev.at-time.Since(began), 0))
		switch ev.kind {
		case "crash":
			st.crashes.Add(1)
			i := int(d.roll("victim") * float64(len(hosts)))
			kill(hosts[i])
			time.Sleep(100 * time.Millisecond)
			hosts[i] = start()
		case "revoke":
			st.revokes.Add(1)
			mb.Revoke(ev.p)
		case "lose":
			st.losses.Add(1)
			mb.Lose(ev.p)
		}
	}

	// Liveness: everything settles within bounded virtual time.
	want := len(pl.msgs) + len(pl.dups)
	deadline := time.Now().Add(10 * time.Minute)
	for st.published.Load() < int64(want) || mb.Pending() > 0 {
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
	for _, inc := range hosts {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		if err := inc.host.Stop(ctx); err != nil {
			problem(fmt.Sprintf("stop: %v", err))
		}
		cancel()
	}
	disruptions := int(st.crashes.Load() + st.revokes.Load() + st.losses.Load())
	problems = append(problems, check(pl, reg, shared, mb, svc, disruptions)...)
	return problems
}

func logger() *zap.Logger {
	if *verbose {
		return zap.NewExample()
	}
	return nil
}

// check holds the stores after a run against the model.
func check(pl plan, reg *actorhost.Registry, j journal.Journal, mb *memory.Mailbox, svc *service, disruptions int) []string {
	ctx := context.Background()
	var problems []string
	bad := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }

	envs, err := mb.DLQ().List(ctx)
	if err != nil {
		return []string{err.Error()}
	}
	dead := map[string]string{}
	for _, e := range envs {
		if _, dup := dead[e.MessageID]; dup {
			bad("%s is in the DLQ twice", e.MessageID)
		}
		dead[e.MessageID] = e.Reason
	}
	byActor := map[channel.Address][]string{}
	for _, m := range pl.msgs {
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
		r, err := reg.Replay(ctx, j, addr, actorhost.ReplayOptions{})
		if err != nil {
			bad("%s does not replay: %v", addr, err)
			continue
		}
		var s seen
		json.Unmarshal(r.State, &s)
		var want []string
		for _, id := range ids {
			o := pl.orders[id]
			reason, isDead := dead[id]
			if outcomes[id] != 1 {
				bad("%s of %s has %d outcomes in the journal, want 1", id, addr, outcomes[id])
			}
			switch {
			case o.Perm:
				if reason != "permanent error" {
					bad("%s of %s: permanent error, but dead-lettered %q", id, addr, reason)
				}
			case o.Fail >= pl.maxAttempts:
				if reason != "attempts exhausted" {
					bad("%s of %s fails every attempt, but dead-lettered %q", id, addr, reason)
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
