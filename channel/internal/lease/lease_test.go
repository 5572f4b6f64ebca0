package lease

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/postbox-dev/postbox/channel"
	"github.com/postbox-dev/postbox/internal/waitfor"
)

// store is an in-memory lease table shared by the drivers of one test:
// the engine's own logic is under test here; the backends' drivers run the
// channel conformance suite against real storage.
type store struct {
	mu         sync.Mutex
	partitions int
	owner      map[int32]string
	epoch      map[int32]int64
	live       map[string]bool
	fail       error // Tick fails with it while set
}

func newStore(partitions int) *store {
	return &store{partitions: partitions, owner: map[int32]string{}, epoch: map[int32]int64{}, live: map[string]bool{}}
}

// steal gives partition p to another owner, as a takeover after expiry
// would.
func (st *store) steal(p int32) {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.owner[p] = "thief"
	st.epoch[p]++
}

type driver struct {
	st   *store
	name string
}

func (d *driver) Tick(_ context.Context, held []Held, take bool) (TickResult, error) {
	st := d.st
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.fail != nil {
		return TickResult{}, st.fail
	}
	if take {
		st.live[d.name] = true
	} else {
		delete(st.live, d.name)
	}
	res := TickResult{Live: len(st.live)}
	for _, h := range held {
		if st.owner[h.Partition] != d.name || st.epoch[h.Partition] != h.Epoch {
			res.Lost = append(res.Lost, h.Partition)
		}
	}
	owned := len(held) - len(res.Lost)
	target := (st.partitions + max(res.Live, 1) - 1) / max(res.Live, 1)
	for p := int32(0); take && int(p) < st.partitions && owned < target; p++ {
		if st.owner[p] == "" {
			st.owner[p] = d.name
			st.epoch[p]++
			res.Taken = append(res.Taken, Held{p, st.epoch[p]})
			owned++
		}
	}
	return res, nil
}

// drop frees h if it is still the driver's.
func (d *driver) drop(h Held) {
	if d.st.owner[h.Partition] == d.name && d.st.epoch[h.Partition] == h.Epoch {
		d.st.owner[h.Partition] = ""
	}
}

func (d *driver) NewClaim(c *Claim) ClaimDriver { return &claim{d: d, c: c} }
func (d *driver) Flush()                        {}

func (d *driver) Work(ctx context.Context) error {
	<-ctx.Done()
	return nil
}

// claim delivers nothing; it only releases.
type claim struct {
	d *driver
	c *Claim
}

func (c *claim) Start(context.Context) {}
func (c *claim) Wake()                 {}

func (c *claim) Release(ctx context.Context, _ func() []Ref) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, err // as a store call would
	}
	c.d.st.mu.Lock()
	defer c.d.st.mu.Unlock()
	c.d.drop(Held{c.c.Partition(), c.c.Epoch()})
	return true, nil
}

func newEngine(st *store, name string, ttl time.Duration) (*Engine, *driver) {
	d := &driver{st: st, name: name}
	return New(Config{Backend: "test", Owner: name, LeaseTTL: ttl, Buffer: 4, BatchSize: 4, Partitions: st.partitions,
		Attach: func() (<-chan struct{}, func(), error) { return nil, func() {}, nil }}, d), d
}

// running runs e in the background, releasing every claim once its
// Messages closes, and returns a stop function that waits for Run.
func running(t *testing.T, e *Engine) (stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- e.Run(ctx, func(cl channel.Claim) {
			for range cl.Messages() {
			}
			cl.Release(context.Background())
		})
	}()
	return func() error {
		cancel()
		return <-done
	}
}

func owned(st *store, name string) int {
	st.mu.Lock()
	defer st.mu.Unlock()
	n := 0
	for _, o := range st.owner {
		if o == name {
			n++
		}
	}
	return n
}

func TestFairShareMovesPartitionsToANewConsumer(t *testing.T) {
	st := newStore(6)
	a, _ := newEngine(st, "a", 150*time.Millisecond)
	stopA := running(t, a)
	defer stopA()
	waitfor.Until(t, 5*time.Second, "a owns all 6", func() bool { return owned(st, "a") == 6 })

	b, _ := newEngine(st, "b", 150*time.Millisecond)
	stopB := running(t, b)
	waitfor.Until(t, 5*time.Second, "3 each", func() bool { return owned(st, "a") == 3 && owned(st, "b") == 3 })
	// a gave up its highest partitions and kept the low ones.
	for _, cl := range Claims[*claim](a) {
		if p := cl.c.Partition(); p >= 3 {
			t.Errorf("a kept partition %d", p)
		}
	}
	if err := stopB(); err != nil {
		t.Fatal(err)
	}
	// b left the live count on its way out: a takes all back.
	waitfor.Until(t, 5*time.Second, "a owns all 6 again", func() bool { return owned(st, "a") == 6 })
}

func TestLostLeaseEndsTheClaim(t *testing.T) {
	st := newStore(1)
	e, _ := newEngine(st, "a", 150*time.Millisecond)
	lost := make(chan channel.Claim, 1)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- e.Run(ctx, func(cl channel.Claim) {
			<-cl.Lost()
			lost <- cl
			cl.Release(context.Background())
		})
	}()
	waitfor.Until(t, 5*time.Second, "a claim", func() bool { return len(Claims[*claim](e)) == 1 })
	st.steal(0)
	select {
	case cl := <-lost:
		if _, ok := <-cl.Messages(); ok {
			t.Error("Messages open after Lost")
		}
		if err := cl.Ack(context.Background()); err != nil {
			t.Errorf("ack after Lost: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the claim did not see its lease lost")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestWatchdogLosesTheClaimWhenRenewalsFail(t *testing.T) {
	st := newStore(1)
	ttl := 300 * time.Millisecond
	e, _ := newEngine(st, "a", ttl)
	lost := make(chan time.Time, 1)
	claims := make(chan int64, 2)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- e.Run(ctx, func(cl channel.Claim) {
			claims <- cl.(*Claim).Epoch()
			for {
				select {
				case <-cl.Lost():
					lost <- time.Now()
					return
				case _, ok := <-cl.Messages():
					if !ok {
						select {
						case <-cl.Lost(): // closed before Messages
							lost <- time.Now()
						default:
							_ = cl.Release(context.Background())
						}
						return
					}
				}
			}
		})
	}()
	first := <-claims
	st.mu.Lock()
	failed := time.Now()
	st.fail = errors.New("store down")
	st.mu.Unlock()
	select {
	case at := <-lost:
		// Lost by the local clock, before the lease could end in the
		// store (at most LeaseTTL after the last renewal).
		if d := at.Sub(failed); d > ttl {
			t.Errorf("lost %v after renewals began to fail, want within LeaseTTL %v", d, ttl)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the watchdog did not end the claim")
	}
	// Failing for several LeaseTTLs does not end Run: once the store is
	// back, the keeper takes the partition again, under a new epoch.
	time.Sleep(3 * ttl)
	select {
	case err := <-done:
		t.Fatalf("Run ended while the store was down: %v", err)
	default:
	}
	st.mu.Lock()
	st.fail = nil
	delete(st.owner, 0) // its lease expired in the store meanwhile
	st.mu.Unlock()
	select {
	case again := <-claims:
		if again <= first {
			t.Errorf("claimed again under epoch %d, want above %d", again, first)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the partition was not claimed again once the store was back")
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run: %v", err)
	}
}

// A store that never answers, from the start, ends Run with its error
// after a LeaseTTL: more likely misconfigured than restarting.
func TestKeeperGivesUpOnAStoreThatNeverAnswered(t *testing.T) {
	st := newStore(1)
	st.fail = errors.New("wrong password")
	ttl := 300 * time.Millisecond
	e, _ := newEngine(st, "a", ttl)
	began := time.Now()
	err := e.Run(context.Background(), func(channel.Claim) { t.Error("claimed from a store that never answered") })
	if err == nil || !strings.Contains(err.Error(), "wrong password") {
		t.Fatalf("Run = %v, want the store's error", err)
	}
	if d := time.Since(began); d < ttl || d > 5*time.Second {
		t.Errorf("Run gave up after %v, want about LeaseTTL %v", d, ttl)
	}
}

func TestRunOnceAndClose(t *testing.T) {
	st := newStore(2)
	e, _ := newEngine(st, "a", 150*time.Millisecond)
	if err := e.Run(context.Background(), nil); err == nil {
		t.Error("Run with a nil onClaim did not fail")
	}
	stop := running(t, e)
	waitfor.Until(t, 5*time.Second, "2 claims", func() bool { return owned(st, "a") == 2 })
	if err := e.Run(context.Background(), func(channel.Claim) {}); err == nil {
		t.Error("a second Run did not fail")
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if n := owned(st, "a"); n != 0 {
		t.Errorf("%d leases held after Run returned", n)
	}
	e.Close()
	if err := e.Run(context.Background(), func(channel.Claim) {}); !errors.Is(err, channel.ErrClosed) {
		t.Errorf("Run after Close = %v, want ErrClosed", err)
	}
}

// A claim that onClaim never releases is released when Run ends.

func TestRunReleasesWhatOnClaimLeft(t *testing.T) {
	st := newStore(3)
	e, _ := newEngine(st, "a", 150*time.Millisecond)
	if n := leasesLeftByRun(t, st, e, func(channel.Claim) {}); n != 0 {
		t.Errorf("%d leases held after Run returned", n)
	}
}

// leasesLeftByRun runs e with onClaim until it holds every partition of
// st, stops it, and counts the leases still held once Run has returned.
func leasesLeftByRun(t *testing.T, st *store, e *Engine, onClaim func(channel.Claim)) int {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx, onClaim) }()
	waitfor.Until(t, 5*time.Second, "every lease", func() bool { return owned(st, "a") == st.partitions })
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	return owned(st, "a")
}

// Handlers that outlast a LeaseTTL after Run is asked to stop still have
// what they left unreleased released: the release gets a LeaseTTL of its
// own, or the partitions would sit leased by no one until expiry.
func TestRunReleasesWhatSlowHandlersLeft(t *testing.T) {
	st := newStore(2)
	ttl := 150 * time.Millisecond
	e, _ := newEngine(st, "a", ttl)
	n := leasesLeftByRun(t, st, e, func(cl channel.Claim) {
		for range cl.Messages() {
		}
		time.Sleep(3 * ttl) // finishing in-flight work; never releases
	})
	if n != 0 {
		t.Errorf("%d leases held after Run returned", n)
	}
}
