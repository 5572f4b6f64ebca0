// Package counter is the built-in example actor: it sums integers. The
// demo, the docs, the benchmarks and the crash tests all run it.
//
// Payload {"add": <int>} adds to the value. With "failTimes": K the handler
// fails (retryably) on attempts 1..K and succeeds after. A payload that is
// not JSON, or has no integer "add", is a permanent error. Every message
// makes one side effect, "notify", which reports the new value to a Sink.
package counter

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"sync"

	"github.com/postbox-dev/postbox/actorhost"
	"github.com/postbox-dev/postbox/actors/internal/payload"
)

// Type is the actor type counters register under.
const Type = "counter"

// State is a counter's state.
type State struct {
	Value   int64 `json:"value"`
	Applied int64 `json:"applied"`
}

// Payload is a counter message.
type Payload struct {
	Add       *int64 `json:"add"`
	FailTimes int    `json:"failTimes,omitempty"`
}

// Sink receives the notify side effect: the idempotency key, the actor and
// its value after the message.
type Sink interface {
	Notify(ctx context.Context, key, actor string, value int64) error
}

// Register registers the counter type on reg. sink may be nil.
func Register(reg *actorhost.Registry, sink Sink) error {
	return actorhost.Register(reg, Type, Handler(sink))
}

// Handler returns the counter's handler, notifying sink (which may be nil).
func Handler(sink Sink) actorhost.Handler[State] {
	return func(ctx *actorhost.Context, s *State, msg actorhost.Message) error {
		var p Payload
		if err := payload.Decode(Type, msg.Payload, &p, &p.Add); err != nil {
			return err
		}
		s.Value += *p.Add
		s.Applied++
		value := s.Value
		_, err := actorhost.Effect(ctx, "notify", func(c context.Context, key string) (int64, error) {
			if sink != nil {
				if err := sink.Notify(c, key, ctx.Address().String(), value); err != nil {
					return 0, err
				}
			}
			return value, nil
		})
		if err != nil {
			return err
		}
		if ctx.Attempt() <= p.FailTimes {
			return fmt.Errorf("counter: failing attempt %d of %d on request", ctx.Attempt(), p.FailTimes)
		}
		return nil
	}
}

// FileSink appends one JSON line per notification to a file:
// {"key": …, "actor": …, "value": …}. Each line is a single write, so
// lines from concurrent actors never interleave and survive a crash of the
// process.
type FileSink struct {
	mu sync.Mutex
	f  *os.File
}

// OpenFileSink opens (creating) path for appending.
func OpenFileSink(path string) (*FileSink, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("counter sink: %w", err)
	}
	return &FileSink{f: f}, nil
}

// SinkLine is one line of a FileSink.
type SinkLine struct {
	Key   string `json:"key"`
	Actor string `json:"actor"`
	Value int64  `json:"value"`
}

// Notify appends the line.
func (s *FileSink) Notify(_ context.Context, key, actor string, value int64) error {
	line, err := json.Marshal(SinkLine{Key: key, Actor: actor, Value: value})
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	_, err = s.f.Write(append(line, '\n'))
	return err
}

// Close closes the file.
func (s *FileSink) Close() error { return s.f.Close() }

// ReadSink reads every line of a FileSink's file.
func ReadSink(path string) ([]SinkLine, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("counter sink: %w", err)
	}
	defer f.Close()
	var lines []SinkLine
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var l SinkLine
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			return nil, fmt.Errorf("counter sink %s line %d: %w", path, len(lines)+1, err)
		}
		lines = append(lines, l)
	}
	return lines, sc.Err()
}
