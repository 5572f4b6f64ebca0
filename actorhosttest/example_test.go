package actorhosttest_test

import (
	"fmt"
	"slices"
	"testing"

	"github.com/postbox-dev/postbox/actorhost"
	"github.com/postbox-dev/postbox/actorhosttest"
)

// A test of one's own handler: send, settle, look at the state and the
// outcomes, and check that the journal replays to the same state. In a
// test, pass its t; this example stands one in.
func Example() {
	t := &exampleT{}
	defer t.cleanup()

	type visits struct{ N int }
	reg := actorhost.NewRegistry()
	actorhost.Register(reg, "visits", func(c *actorhost.Context, s *visits, m actorhost.Message) error {
		s.N++
		return nil
	})

	k := actorhosttest.New(t, reg, actorhosttest.Options{})
	k.Send(actorhosttest.Msg("visits/home", "v1", "{}"), actorhosttest.Msg("visits/home", "v2", "{}"))
	k.Send(actorhosttest.Msg("visits/home", "v1", "{}")) // the same ID again
	k.Settle()
	var s visits
	k.State("visits/home", &s)
	fmt.Println("visits:", s.N)
	fmt.Println("v1:", k.Outcome("visits/home", "v1"))
	k.VerifyReplay("visits/home")
	fmt.Println("failed:", t.failed)
	// Output:
	// visits: 2
	// v1: completed
	// failed: false
}

// exampleT is the part of testing.TB the kit uses.
type exampleT struct {
	testing.TB
	failed   bool
	cleanups []func()
}

func (t *exampleT) Helper()                   {}
func (t *exampleT) Cleanup(f func())          { t.cleanups = append(t.cleanups, f) }
func (t *exampleT) Errorf(f string, a ...any) { t.failed = true; fmt.Printf(f+"\n", a...) }
func (t *exampleT) Fatalf(f string, a ...any) { t.Errorf(f, a...); panic("fatal") }
func (t *exampleT) Fatal(a ...any)            { t.Fatalf("%s", fmt.Sprint(a...)) }
func (t *exampleT) cleanup() {
	for _, f := range slices.Backward(t.cleanups) {
		f()
	}
}
