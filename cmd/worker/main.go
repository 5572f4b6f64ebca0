// Command worker runs the built-in postbox actors (counter, tally) and
// inspects their mailbox, journal and dead letters: worker.Main over the
// built-in registry, plus the demo.
package main

import (
	"context"
	"flag"
	"os"

	"github.com/postbox-dev/postbox/actorhost"
	"github.com/postbox-dev/postbox/actors/counter"
	"github.com/postbox-dev/postbox/actors/tally"
	"github.com/postbox-dev/postbox/worker"
)

func main() {
	sink := &fileSink{}
	reg := actorhost.NewRegistry()
	if err := counter.Register(reg, sink); err != nil {
		panic(err) // a fixed, valid registration
	}
	if err := tally.Register(reg); err != nil {
		panic(err)
	}
	os.Exit(worker.Main(reg,
		worker.WithCommand("demo", "crash a worker mid-run, recover, prove the results", cmdDemo),
		worker.WithRunFlags(func(fs *flag.FlagSet) {
			fs.StringVar(&sink.path, "counter-sink", "", "append one JSON line per counter notify side effect to PATH")
		}),
		worker.WithRunHook(sink.open),
	))
}

// builtinRegistry knows the actor types this binary runs, without a sink:
// for replays, which run no side effect.
func builtinRegistry() *actorhost.Registry {
	reg := actorhost.NewRegistry()
	if err := counter.Register(reg, nil); err != nil {
		panic(err)
	}
	if err := tally.Register(reg); err != nil {
		panic(err)
	}
	return reg
}

// fileSink is the counter's sink: the file --counter-sink names, if any.
type fileSink struct {
	path string
	f    *counter.FileSink
}

func (s *fileSink) open(context.Context) (func(), error) {
	if s.path == "" {
		return nil, nil
	}
	f, err := counter.OpenFileSink(s.path)
	if err != nil {
		return nil, worker.Usagef("--counter-sink %q: %v", s.path, err)
	}
	s.f = f
	return func() { f.Close() }, nil
}

func (s *fileSink) Notify(ctx context.Context, key, actor string, value int64) error {
	if s.f == nil {
		return nil
	}
	return s.f.Notify(ctx, key, actor, value)
}
