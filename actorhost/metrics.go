package actorhost

import (
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Stats are the host's counters since it started.
type Stats struct {
	Processed       int64 // messages completed, counted once journaled
	Retried         int64 // failed attempts that were retried
	DeadLettered    int64
	Deduplicated    int64 // deliveries acked without running: outcome already journaled
	EffectsExecuted int64 // side effects that ran
	EffectsAnswered int64 // side effects answered from the journal instead
	Activations     int64
	Replayed        int64 // messages re-run from the journal on activation
	Fenced          int64 // partitions given up because a newer owner fenced them
	InFlight        int64
	ActiveActors    int64
	BrokenActors    int64 // actors in memory whose journal does not replay (see ErrBroken)
	Refused         int64 // group commits of a partition the journal refused for good
	Claimed         int64 // partitions held now, their journal epoch taken
}

type metrics struct {
	processed, retried, deadLettered, deduplicated atomic.Int64
	effectsExecuted, effectsAnswered               atomic.Int64
	activations, replayed, fenced                  atomic.Int64
	inFlight, activeActors, brokenActors           atomic.Int64
	claimed                                        atomic.Int64
	refused                                        atomic.Int64

	handlerSeconds *prometheus.HistogramVec // by actor type
	flushEntries   prometheus.Histogram
	flushSeconds   prometheus.Histogram
}

func newMetrics(reg prometheus.Registerer, labels prometheus.Labels) (*metrics, error) {
	m := &metrics{
		handlerSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "postbox_handler_duration_seconds", Help: "Time spent in actor handlers, per attempt, by actor type.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 4, 10), ConstLabels: labels,
		}, []string{"type"}),
		flushEntries: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "postbox_journal_flush_entries", Help: "Journal entries written per group commit.",
			Buckets: prometheus.ExponentialBuckets(1, 4, 8), ConstLabels: labels,
		}),
		flushSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "postbox_journal_flush_duration_seconds", Help: "Time to write one group commit durably.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14), ConstLabels: labels,
		}),
	}
	if reg == nil {
		return m, nil
	}
	counter := func(name, help string, v *atomic.Int64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help, ConstLabels: labels}, func() float64 { return float64(v.Load()) })
	}
	gauge := func(name, help string, v *atomic.Int64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help, ConstLabels: labels}, func() float64 { return float64(v.Load()) })
	}
	for _, c := range []prometheus.Collector{
		counter("postbox_messages_processed_total", "Messages handled successfully.", &m.processed),
		counter("postbox_messages_retried_total", "Failed attempts that were retried.", &m.retried),
		counter("postbox_messages_dead_lettered_total", "Messages sent to the dead-letter queue.", &m.deadLettered),
		counter("postbox_messages_deduplicated_total", "Redeliveries acked without running: outcome already journaled.", &m.deduplicated),
		counter("postbox_side_effects_executed_total", "Side effects that ran.", &m.effectsExecuted),
		counter("postbox_side_effects_answered_total", "Side effects answered from the journal.", &m.effectsAnswered),
		counter("postbox_actor_activations_total", "Actors loaded from checkpoint and journal.", &m.activations),
		counter("postbox_partitions_fenced_total", "Partitions given up because a newer owner fenced them.", &m.fenced),
		gauge("postbox_messages_in_flight", "Messages delivered and not yet acked or abandoned.", &m.inFlight),
		counter("postbox_journal_refused_total", "Partition batches the journal refused for good (sequence conflicts, duplicate outcomes, invalid identifiers).", &m.refused),
		gauge("postbox_actors_active", "Actors held in memory.", &m.activeActors),
		gauge("postbox_partitions_claimed", "Partitions this host holds now, with their journal epoch taken.", &m.claimed),
		gauge("postbox_actors_broken", "Actors in memory whose journal does not replay; their messages are dead-lettered (the log names each and why).", &m.brokenActors),
		m.handlerSeconds, m.flushEntries, m.flushSeconds,
	} {
		if err := reg.Register(c); err != nil {
			if errors.As(err, new(prometheus.AlreadyRegisteredError)) {
				return nil, fmt.Errorf("actorhost: metrics: another host with the same labels (%v) is registered on Config.Metrics; give each host its own Config.MetricLabels, e.g. {\"mailbox\": \"orders\"}: %w", labels, err)
			}
			return nil, fmt.Errorf("actorhost: register metrics: %w", err)
		}
	}
	return m, nil
}

func (m *metrics) flushed(entries int, d time.Duration) {
	m.flushEntries.Observe(float64(entries))
	m.flushSeconds.Observe(d.Seconds())
}

func (m *metrics) snapshot() Stats {
	return Stats{
		Processed: m.processed.Load(), Retried: m.retried.Load(), DeadLettered: m.deadLettered.Load(),
		Deduplicated: m.deduplicated.Load(), EffectsExecuted: m.effectsExecuted.Load(),
		EffectsAnswered: m.effectsAnswered.Load(), Activations: m.activations.Load(),
		Replayed: m.replayed.Load(), Fenced: m.fenced.Load(), InFlight: m.inFlight.Load(),
		ActiveActors: m.activeActors.Load(), BrokenActors: m.brokenActors.Load(), Refused: m.refused.Load(), Claimed: m.claimed.Load(),
	}
}
