package actorhost

import (
	"cmp"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/postbox-dev/postbox/channel"
	"github.com/postbox-dev/postbox/dlq"
	"github.com/postbox-dev/postbox/journal"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

// Config configures a Host. Registry, Consumer, Journal and DeadLetters are
// required; every other field has a default.
type Config struct {
	Registry    *Registry
	Consumer    channel.Consumer
	Journal     journal.Journal
	DeadLetters dlq.Writer

	// Worker identifies this process in dead letters. Defaults to
	// "<hostname>:<pid>".
	Worker string
	// Logger defaults to a no-op logger.
	Logger *zap.Logger
	// Metrics, when set, gets the host's Prometheus collectors.
	Metrics prometheus.Registerer
	// MetricLabels are constant labels on every one of the host's metrics.
	// Two hosts may share one Metrics registry when their labels differ
	// (for example {"mailbox": "orders"} and {"mailbox": "payments"}).
	MetricLabels prometheus.Labels

	// Concurrency is how many actors run handlers at once. Defaults to 64.
	Concurrency int
	// MaxAttempts is how many attempts a message gets before it is
	// dead-lettered. Defaults to 5.
	MaxAttempts int
	// BackoffInitial is the delay before the first retry; each further retry
	// doubles it, up to BackoffMax, with jitter. Defaults to 100ms.
	BackoffInitial time.Duration
	// BackoffMax caps the retry delay. Defaults to 30s.
	BackoffMax time.Duration
	// CheckpointEvery writes a checkpoint of an actor's state after this many
	// completed messages, so activation replays at most that many. Defaults
	// to 100.
	CheckpointEvery int
	// IdleTimeout passivates an actor (drops it from memory) after this long
	// without messages. Defaults to 5m.
	IdleTimeout time.Duration
	// MaxActors caps the actors held in memory; the least recently used idle
	// ones are passivated beyond it. Defaults to 10000.
	MaxActors int
	// MaxInFlight bounds the messages of one partition taken from the
	// channel and not yet acked (the window above the watermark). When it is
	// reached the host stops taking messages from that partition, so the
	// channel's own backpressure (pausing a Kafka fetch, say) applies.
	// Defaults to 4096.
	MaxInFlight int
	// DrainTimeout bounds how long a partition being given up (rebalanced
	// away, or the host stopping) waits for its in-flight messages; the rest
	// are abandoned and delivered again later. Defaults to 10s.
	DrainTimeout time.Duration
}

// WithDefaults returns c with every unset field at its default.
func (c Config) WithDefaults() Config {
	if c.Worker == "" {
		host, _ := os.Hostname()
		c.Worker = fmt.Sprintf("%s:%d", host, os.Getpid())
	}
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
	c.Concurrency = cmp.Or(c.Concurrency, 64)
	c.MaxAttempts = cmp.Or(c.MaxAttempts, 5)
	c.BackoffInitial = cmp.Or(c.BackoffInitial, 100*time.Millisecond)
	c.BackoffMax = cmp.Or(c.BackoffMax, 30*time.Second)
	c.CheckpointEvery = cmp.Or(c.CheckpointEvery, 100)
	c.IdleTimeout = cmp.Or(c.IdleTimeout, 5*time.Minute)
	c.MaxActors = cmp.Or(c.MaxActors, 10000)
	c.MaxInFlight = cmp.Or(c.MaxInFlight, 4096)
	c.DrainTimeout = cmp.Or(c.DrainTimeout, 10*time.Second)
	return c
}

func (c Config) validate() error {
	var errs []error
	if c.Registry == nil {
		errs = append(errs, errors.New("Registry is required: create one with NewRegistry and Register your actor types"))
	}
	if c.Consumer == nil {
		errs = append(errs, errors.New("Consumer is required: open a channel backend, e.g. channel/sqlite"))
	} else if c.Consumer.Mailbox() == "" {
		errs = append(errs, errors.New("Consumer.Mailbox() is empty: a channel.Consumer must name its mailbox, the same in every process"))
	}
	if c.Journal == nil {
		errs = append(errs, errors.New("Journal is required: open a journal backend, e.g. journal/sqlite"))
	}
	if c.DeadLetters == nil {
		errs = append(errs, errors.New("DeadLetters is required: use the channel backend's DLQ store"))
	}
	for _, f := range []struct {
		name string
		v    int64
	}{
		{"Concurrency", int64(c.Concurrency)}, {"MaxAttempts", int64(c.MaxAttempts)},
		{"CheckpointEvery", int64(c.CheckpointEvery)}, {"MaxActors", int64(c.MaxActors)}, {"MaxInFlight", int64(c.MaxInFlight)},
		{"BackoffInitial", int64(c.BackoffInitial)}, {"BackoffMax", int64(c.BackoffMax)},
		{"IdleTimeout", int64(c.IdleTimeout)}, {"DrainTimeout", int64(c.DrainTimeout)},
	} {
		if f.v < 0 {
			errs = append(errs, fmt.Errorf("%s is %d: must be positive (0 takes the default)", f.name, f.v))
		}
	}
	if c.BackoffMax < c.BackoffInitial {
		errs = append(errs, fmt.Errorf("BackoffMax %s is below BackoffInitial %s", c.BackoffMax, c.BackoffInitial))
	}
	if len(errs) > 0 {
		return fmt.Errorf("actorhost: invalid config: %w", errors.Join(errs...))
	}
	return nil
}
