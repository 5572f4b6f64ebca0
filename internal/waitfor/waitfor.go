// Package waitfor polls a condition in tests until it holds, failing the
// test with what it waited for once the time is up. It is the one polling
// loop of the repository's tests.
package waitfor

import (
	"testing"
	"time"
)

// Until checks cond every 10ms until it holds, and fails t after timeout.
func Until(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	Every(t, timeout, 10*time.Millisecond, what, cond)
}

// Every is Until for conditions that cost something (replaying every actor,
// reading a topic): it checks every interval.
func Every(t testing.TB, timeout, interval time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(interval)
	}
}

// Succeeds is Every for a check that says what is still wrong: it calls
// check every interval until it returns nil, and fails t with its last
// error after timeout.
func Succeeds(t testing.TB, timeout, interval time.Duration, check func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %v", timeout, err)
		}
		time.Sleep(interval)
	}
}

// Receive waits up to timeout for a value from ch, and fails t, saying
// what it waited for, if none comes.
func Receive[V any](t testing.TB, timeout time.Duration, what string, ch <-chan V) V {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(timeout):
		t.Fatalf("timed out after %s waiting for %s", timeout, what)
		var zero V
		return zero
	}
}
