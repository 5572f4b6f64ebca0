// Package actorhost runs actors: it consumes a channel, dispatches each
// message to its actor's handler (in order per actor, concurrently across
// actors), journals attempts, side-effect results and outcomes, and
// acknowledges a message only once its outcome is durable.
//
// Write an actor as a Handler over a state type, register it, and start a
// Host:
//
//	reg := actorhost.NewRegistry()
//	actorhost.Register(reg, "counter", func(ctx *actorhost.Context, s *State, m actorhost.Message) error { … })
//	host, err := actorhost.New(actorhost.Config{Registry: reg, Consumer: c, Journal: j, DeadLetters: d})
//	host.Start(ctx)
//	…
//	host.Stop(shutdownCtx)
//
// The package depends only on the channel, journal and dlq contracts; the
// caller chooses the backends.
package actorhost
