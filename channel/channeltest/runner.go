package channeltest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/postbox-dev/postbox/channel"
	"github.com/postbox-dev/postbox/internal/waitfor"
)

// consumerOptions shape how a runner handles its claims.
type consumerOptions struct {
	name string     // names the consumer in ownership reports
	own  *ownership // shared by the consumers of one test, or nil
	// noAck: record messages without acking them.
	noAck bool
	// handle replaces the default handling (record, then ack unless noAck).
	// The message is recorded before handle is called.
	handle func(cl channel.Claim, m channel.Message)
}

// runner runs one consumer in the background, as a host would: one
// goroutine per claim reads Messages until closed or lost, then releases.
type runner struct {
	t      *testing.T
	f      Features
	opts   consumerOptions
	cancel context.CancelFunc
	done   chan error
	runErr *error // set once Run's result was taken from done

	mu       sync.Mutex
	got      []channel.Message
	current  map[int32]channel.Claim
	seen     []channel.Claim
	loops    []chan struct{} // closed when seen[i]'s Messages loop ends
	handlers int             // claim goroutines not yet finished
	errs     []string
	stopped  bool
}

func startConsumer(t *testing.T, f Features, c channel.Consumer, opts *consumerOptions) *runner {
	t.Helper()
	r := &runner{t: t, f: f, done: make(chan error, 1), current: make(map[int32]channel.Claim)}
	if opts != nil {
		r.opts = *opts
	}
	if r.opts.name == "" {
		r.opts.name = "consumer"
	}
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	go func() { r.done <- c.Run(ctx, r.onClaim) }()
	t.Cleanup(r.stop)
	return r
}

func (r *runner) onClaim(cl channel.Claim) {
	p := cl.Partition()
	loopDone := make(chan struct{})
	r.mu.Lock()
	r.handlers++
	r.current[p] = cl
	r.seen = append(r.seen, cl)
	r.loops = append(r.loops, loopDone)
	r.mu.Unlock()
	if r.opts.own != nil {
		r.opts.own.take(r.opts.name, p)
	}

	lost := false
loop:
	for {
		select {
		case m, ok := <-cl.Messages():
			if !ok {
				break loop
			}
			r.mu.Lock()
			r.got = append(r.got, m)
			r.mu.Unlock()
			switch {
			case r.opts.handle != nil:
				r.opts.handle(cl, m)
			case !r.opts.noAck:
				ctx, cancel := context.WithTimeout(context.Background(), r.f.timeout())
				if err := cl.Ack(ctx, m); err != nil {
					r.errorf("ack message %s on partition %d: %v", m.ID, p, err)
				}
				cancel()
			}
		case <-cl.Lost():
			lost = true
			break loop
		}
	}

	// Ownership ends, as far as this host is concerned, before Release.
	if r.opts.own != nil {
		r.opts.own.give(r.opts.name, p)
	}
	r.mu.Lock()
	if r.current[p] == cl {
		delete(r.current, p)
	}
	r.mu.Unlock()
	close(loopDone)
	if !lost {
		ctx, cancel := context.WithTimeout(context.Background(), r.f.timeout())
		if err := cl.Release(ctx); err != nil {
			r.errorf("release partition %d: %v", p, err)
		}
		cancel()
	}
	r.mu.Lock()
	r.handlers--
	r.mu.Unlock()
}

// errorf records an error to report from the test goroutine: a claim
// goroutine may outlive a failed test.
func (r *runner) errorf(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errs = append(r.errs, fmt.Sprintf(r.opts.name+": "+format, args...))
}

// received returns every delivery so far, in the order received.
func (r *runner) received() []channel.Message {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.got)
}

// waitReceived waits until cond holds for the deliveries so far.
func (r *runner) waitReceived(cond func([]channel.Message) bool, what string, args ...any) {
	r.t.Helper()
	waitfor.Until(r.t, r.f.timeout(), fmt.Sprintf(what, args...), func() bool { return cond(r.received()) })
}

// waitAll waits until n distinct payloads have been received.
func (r *runner) waitAll(n int) {
	r.t.Helper()
	r.waitReceived(func(got []channel.Message) bool { return len(distinctPayloads(got)) == n }, "all %d messages", n)
}

// owns returns how many partitions the consumer's host is working on.
func (r *runner) owns() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.current)
}

// claim returns the current claim of partition p or fails the test.
func (r *runner) claim(p int32) channel.Claim {
	r.t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	cl, ok := r.current[p]
	if !ok {
		r.t.Fatalf("%s does not hold partition %d", r.opts.name, p)
	}
	return cl
}

func (r *runner) claimsSeen() []channel.Claim {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.seen)
}

// loopDone returns a channel closed when cl's Messages loop has ended.
func (r *runner) loopDone(cl channel.Claim) <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i, s := range r.seen {
		if s == cl {
			return r.loops[i]
		}
	}
	return nil
}

// stop cancels Run, waits for it to return and for every claim goroutine
// to finish, and reports what went wrong meanwhile. It is idempotent.
func (r *runner) stop() {
	r.t.Helper()
	r.mu.Lock()
	if r.stopped {
		r.mu.Unlock()
		return
	}
	r.stopped = true
	r.mu.Unlock()

	r.cancel()
	if r.runErr == nil {
		select {
		case err := <-r.done:
			r.runErr = &err
			if err != nil && !errors.Is(err, context.Canceled) {
				r.t.Errorf("%s: Run returned %v, want nil after cancel", r.opts.name, err)
			}
		case <-time.After(r.f.timeout()):
			r.t.Errorf("%s: Run did not return within %v of its context being cancelled", r.opts.name, r.f.timeout())
			return
		}
	}
	deadline := time.Now().Add(r.f.timeout())
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		r.mu.Lock()
		n := r.handlers
		r.mu.Unlock()
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			r.t.Errorf("%s: %d claims still open %v after Run returned: Messages not closed?", r.opts.name, n, r.f.timeout())
			break
		}
		<-tick.C
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, e := range r.errs {
		r.t.Error(e)
	}
	r.errs = nil
}

// ownership tracks which consumer's host works on which partition, to
// catch two at once.
type ownership struct {
	mu    sync.Mutex
	owner map[int32]string
	errs  []string
}

// newOwnership returns an empty ownership record whose violations are
// reported when t ends, also when it fails early.
func newOwnership(t *testing.T) *ownership {
	o := &ownership{owner: make(map[int32]string)}
	t.Cleanup(func() {
		for _, v := range o.violations() {
			t.Error(v)
		}
	})
	return o
}

func (o *ownership) take(name string, p int32) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if prev, ok := o.owner[p]; ok && prev != name {
		o.errs = append(o.errs, fmt.Sprintf("partition %d claimed by %s while %s still held it", p, name, prev))
	}
	o.owner[p] = name
}

func (o *ownership) give(name string, p int32) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.owner[p] == name {
		delete(o.owner, p)
	}
}

func (o *ownership) violations() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return slices.Clone(o.errs)
}
