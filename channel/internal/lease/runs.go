package lease

import (
	"sync"

	"github.com/postbox-dev/postbox/channel"
)

// Runs tracks the consumer runs of one mailbox, so that closing the
// mailbox stops them and waits for them. The zero value is ready.
type Runs struct {
	mu      sync.Mutex
	closed  bool
	closing chan struct{}
	wg      sync.WaitGroup
}

// Attach registers a Run (it is Config.Attach): closing is closed when the
// mailbox is being closed, and Close waits for detach. It fails with
// channel.ErrClosed once the mailbox is closed.
func (r *Runs) Attach() (closing <-chan struct{}, detach func(), err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil, nil, channel.ErrClosed
	}
	r.init()
	r.wg.Add(1)
	return r.closing, r.wg.Done, nil
}

// Close stops the attached runs and waits for them to detach. Only the
// first call does so and returns true: the caller then closes the rest.
func (r *Runs) Close() bool {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return false
	}
	r.closed = true
	r.init()
	close(r.closing)
	r.mu.Unlock()
	r.wg.Wait()
	return true
}

// Closed reports whether Close was called.
func (r *Runs) Closed() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.closed
}

func (r *Runs) init() {
	if r.closing == nil {
		r.closing = make(chan struct{})
	}
}
