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

func TestEveryFailsSayingWhatItWaitedFor(t *testing.T) {
	rec := &failRecorder{TB: t}
	func() {
		defer func() {
			if r := recover(); r != nil && r != rec {
				panic(r)
			}
		}()
		waitfor.Every(rec, 30*time.Millisecond, time.Millisecond, "the moon", func() bool { return false })
	}()
	if rec.msg != "timed out after 30ms waiting for the moon" {
		t.Fatalf("failure %q", rec.msg)
	}
}
