package actorhost

import "time"

// maxPause caps the wait between tries of a call to the journal or the DLQ:
// long enough not to hammer a store that is down, short enough to notice
// soon when it is back.
const maxPause = 5 * time.Second

// pause is the wait between tries of a call to the journal or the DLQ. It
// starts at its first length and doubles after each wait, up to maxPause.
// Retries of a message's handler use Config's backoff instead (see
// Host.backoff): that one is the user's, and durable.
type pause struct{ d time.Duration }

func newPause(first time.Duration) *pause { return &pause{d: first} }

// next is the length of the coming wait.
func (p *pause) next() time.Duration { return p.d }

// grow doubles the next wait, up to maxPause.
func (p *pause) grow() { p.d = min(p.d*2, maxPause) }

// wait sleeps out the coming wait and doubles the next one. It returns
// false, early, when a or b closes; a nil channel never does.
func (p *pause) wait(a, b <-chan struct{}) bool {
	if !sleepUnless(p.d, a, b) {
		return false
	}
	p.grow()
	return true
}

// sleepUnless sleeps for d and returns true, or returns false as soon as a
// or b closes (a nil channel never does).
func sleepUnless(d time.Duration, a, b <-chan struct{}) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-a:
		return false
	case <-b:
		return false
	}
}
