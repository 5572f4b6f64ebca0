package actorhost

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"

	"github.com/postbox-dev/postbox/channel"
)

// Message is what a handler receives.
type Message struct {
	ID      string
	Address channel.Address
	Payload []byte
	Headers map[string]string
}

// Handler handles one message for an actor whose state is S. It may change
// *state; if it returns an error, the change is rolled back. Return
// Permanent(err) to dead-letter the message without retrying. Everything a
// handler does to the outside world goes through ctx.SideEffect, and time and
// randomness through ctx.Now and ctx.Rand, so that replay gives the same
// state.
type Handler[S any] func(ctx *Context, state *S, msg Message) error

// Codec turns actor state into bytes for checkpoints and back.
type Codec interface {
	Marshal(v any) ([]byte, error)
	Unmarshal(data []byte, v any) error
}

// JSON is the default codec.
var JSON Codec = jsonCodec{}

type jsonCodec struct{}

func (jsonCodec) Marshal(v any) ([]byte, error)      { return json.Marshal(v) }
func (jsonCodec) Unmarshal(data []byte, v any) error { return json.Unmarshal(data, v) }

// TypeOption configures one registered actor type.
type TypeOption func(*typeOptions)

type typeOptions struct{ codec Codec }

// WithCodec stores the type's state with c instead of JSON.
func WithCodec(c Codec) TypeOption { return func(o *typeOptions) { o.codec = c } }

// Registry maps actor types to handlers. It is safe for concurrent use.
type Registry struct {
	mu    sync.RWMutex
	types map[string]actorType
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry { return &Registry{types: map[string]actorType{}} }

// Register adds the handler for actor type typ, whose state is S (its zero
// value is a new actor's state).
func Register[S any](r *Registry, typ string, h Handler[S], opts ...TypeOption) error {
	if typ == "" || strings.Contains(typ, "/") {
		return fmt.Errorf("actorhost: actor type %q: must be non-empty and contain no slash", typ)
	}
	if h == nil {
		return fmt.Errorf("actorhost: actor type %q: nil handler", typ)
	}
	o := typeOptions{codec: JSON}
	for _, opt := range opts {
		opt(&o)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, dup := r.types[typ]; dup {
		return fmt.Errorf("actorhost: actor type %q registered twice: register each type once, with one handler", typ)
	}
	r.types[typ] = &typedActor[S]{name: typ, handler: h, codec: o.codec}
	return nil
}

// Types lists the registered actor types, sorted.
func (r *Registry) Types() []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return slices.Sorted(maps.Keys(r.types))
}

func (r *Registry) lookup(typ string) (actorType, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	t, ok := r.types[typ]
	return t, ok
}

// actorType erases S so the host can hold actors of every type.
type actorType interface {
	newState() any
	// handle runs the handler once; a panic comes back as a *PanicError.
	handle(ctx *Context, state any, msg Message) error
	encode(state any) ([]byte, error)
	decode(data []byte) (any, error)
	// view renders state as JSON for operators, whatever the codec.
	view(state any) ([]byte, error)
}

type typedActor[S any] struct {
	name    string
	handler Handler[S]
	codec   Codec
}

func (t *typedActor[S]) newState() any { return new(S) }

// handle calls the user's handler, the one place it is called, turning a
// panic into a *PanicError.
func (t *typedActor[S]) handle(ctx *Context, state any, msg Message) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = &PanicError{Value: r, Stack: stack()}
		}
	}()
	return t.handler(ctx, state.(*S), msg)
}

func (t *typedActor[S]) encode(state any) ([]byte, error) { return t.codec.Marshal(state.(*S)) }

func (t *typedActor[S]) decode(data []byte) (any, error) {
	s := new(S)
	if err := t.codec.Unmarshal(data, s); err != nil {
		return nil, fmt.Errorf("actorhost: decode %s checkpoint: %w", t.name, err)
	}
	return s, nil
}

func (t *typedActor[S]) view(state any) ([]byte, error) { return json.Marshal(state.(*S)) }
