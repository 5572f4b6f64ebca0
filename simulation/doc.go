// Package simulation holds a deterministic, fault-injecting simulation of
// the actor host: seeded runs of the real actorhost.Host against the
// in-memory mailbox and journal, wrapped so that they fail as real ones do
// (transient errors, ambiguous commits, lost replies, latency), with hosts
// crashed and restarted on the same stores, partitions revoked and lost,
// and messages published twice. Virtual time (testing/synctest) makes
// minutes of backoff cost nothing. A checker holds every run against a
// model of the promise; see sim_test.go. Run it with
//
//	go test ./simulation -sim.seeds 1000
//	go test ./simulation -run TestSimulation -sim.seed 42 -v   # one seed again
package simulation
