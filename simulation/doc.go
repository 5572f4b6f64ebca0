// Package simulation holds a deterministic, fault-injecting simulation of
// the actor host: seeded runs of the real actorhost.Host against the
// in-memory mailbox and journal, wrapped so that they fail as real ones do
// (transient errors, ambiguous commits, lost replies, latency, lost acks),
// with hosts crashed and restarted on the same stores, partitions revoked
// and lost, actors passivated under pressure, messages published twice,
// and messages no handler may run (an unknown type, an address or ID that
// breaks the identifier limits, an actor whose journal does not replay).
// Virtual time (testing/synctest) makes minutes of backoff cost nothing. A
// checker holds every run against a model of the promise; see sim_test.go.
// Run it with
//
//	go test ./simulation                                       # the CI set: 1,000 seeds
//	go test ./simulation -sim.seeds 20000 -sim.first 5000      # a soak
//	go test ./simulation -run TestSimulation -sim.seed 42 -v   # one seed again
package simulation
