// Package runonce is the lifecycle the mailboxes' consumers share: Run at
// most once, and Close ending a running Run and waiting for it to return.
package runonce

import (
	"context"
	"errors"
	"sync"

	"github.com/postbox-dev/postbox/channel"
)

// ErrTwice is Begin's error once Run has been called.
var ErrTwice = errors.New("Run called twice: create a new Consumer to consume again")

// Gate guards one Consumer's Run. The zero value is ready.
type Gate struct {
	mu      sync.Mutex
	started bool
	closed  bool
	cancel  context.CancelFunc
	done    chan struct{}
}

// Begin starts the one Run: it returns ctx as Run should use it (Close
// cancels it) and end, to call as Run returns. It fails with
// channel.ErrClosed after Close, and with ErrTwice after a first Begin.
func (g *Gate) Begin(ctx context.Context) (context.Context, func(), error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	switch {
	case g.closed:
		return nil, nil, channel.ErrClosed
	case g.started:
		return nil, nil, ErrTwice
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	g.started, g.cancel, g.done = true, cancel, done
	return ctx, func() { cancel(); close(done) }, nil
}

// Close makes Begin fail from now on, and ends a running Run, waiting
// until it has returned.
func (g *Gate) Close() {
	g.mu.Lock()
	g.closed = true
	cancel, done := g.cancel, g.done
	g.mu.Unlock()
	if cancel != nil {
		cancel()
		<-done
	}
}
