package waitfor_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/postbox-dev/postbox/internal/waitfor"
)

func TestUntilReturnsOnceTheConditionHolds(t *testing.T) {
	n := 0
	waitfor.Until(t, time.Second, "three checks", func() bool { n++; return n == 3 })
	if n != 3 {
		t.Fatalf("checked %d times", n)
	}
}

// failRecorder stands in for a test that is expected to fail.
type failRecorder struct {
	testing.TB
	msg string
}

func (f *failRecorder) Helper() {}
func (f *failRecorder) Fatalf(format string, args ...any) {
	f.msg = fmt.Sprintf(format, args...)
	panic(f)
}

// failure runs wait against a failRecorder and returns how it failed.
func failure(t *testing.T, wait func(testing.TB)) string {
	rec := &failRecorder{TB: t}
	func() {
		defer func() {
			if r := recover(); r != nil && r != rec {
				panic(r)
			}
		}()
		wait(rec)
	}()
	return rec.msg
}

func TestEveryFailsSayingWhatItWaitedFor(t *testing.T) {
	msg := failure(t, func(tb testing.TB) {
		waitfor.Every(tb, 30*time.Millisecond, time.Millisecond, "the moon", func() bool { return false })
	})
	if msg != "timed out after 30ms waiting for the moon" {
		t.Fatalf("failure %q", msg)
	}
}

func TestSucceedsFailsWithTheLastError(t *testing.T) {
	n := 0
	waitfor.Succeeds(t, time.Second, time.Millisecond, func() error {
		if n++; n < 3 {
			return fmt.Errorf("try %d", n)
		}
		return nil
	})
	msg := failure(t, func(tb testing.TB) {
		n = 0
		waitfor.Succeeds(tb, 30*time.Millisecond, time.Millisecond, func() error { n++; return fmt.Errorf("try %d", n) })
	})
	if want := fmt.Sprintf("after 30ms: try %d", n); msg != want {
		t.Fatalf("failure %q, want %q", msg, want)
	}
}

func TestReceive(t *testing.T) {
	ch := make(chan int, 1)
	ch <- 7
	if v := waitfor.Receive(t, time.Second, "a number", ch); v != 7 {
		t.Fatalf("received %d", v)
	}
	msg := failure(t, func(tb testing.TB) { waitfor.Receive(tb, 20*time.Millisecond, "a number", ch) })
	if msg != "timed out after 20ms waiting for a number" {
		t.Fatalf("failure %q", msg)
	}
}
