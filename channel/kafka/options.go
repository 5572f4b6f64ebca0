package kafka

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap"
)

// Options configures a Publisher, a Consumer or a DeadLetters queue. The
// zero value is ready to use: WithDefaults fills in every field.
type Options struct {
	// Group is the Kafka consumer group; consumers of one group share the
	// topic's partitions. Publishers and DeadLetters ignore it. Defaults to
	// "postbox." + topic.
	Group string

	// ClientID names this process to the brokers, in their logs and quotas.
	// Defaults to "postbox".
	ClientID string

	// BufferSize is how many fetched messages one claim holds before the
	// consumer pauses fetching its partition; fetching resumes once half of
	// them are handed out. Defaults to 512.
	BufferSize int

	// CommitInterval is how often acked offsets are committed in the
	// background; Release and revocation commit at once. Defaults to 1s.
	CommitInterval time.Duration

	// RevokeTimeout bounds how long a revoked claim waits for Release
	// before what was acked is committed and the partition handed over.
	// Must be shorter than RebalanceTimeout. Defaults to 10s.
	RevokeTimeout time.Duration

	// SessionTimeout is how long the group waits for a consumer that stopped
	// heartbeating before its partitions go to others. The broker bounds it
	// with group.min.session.timeout.ms (6s by default). Defaults to 45s.
	SessionTimeout time.Duration

	// RebalanceTimeout bounds how long the group waits for every consumer to
	// give up revoked partitions. Defaults to 60s.
	RebalanceTimeout time.Duration

	// FetchMaxWait is how long the broker may hold a fetch that has no new
	// records yet: lower hands out records sooner, with more idle fetches.
	// Defaults to 500ms.
	FetchMaxWait time.Duration

	// PublishTimeout bounds how long Publish waits for one record to reach
	// all in-sync replicas, retries included; likewise one attempt of the
	// Consumer to forward foreign records, and the writes of DeadLetters.
	// Defaults to 30s.
	PublishTimeout time.Duration

	// Logger receives the client's warnings and errors. Defaults to
	// discarding them.
	Logger *zap.Logger

	// ClientOptions go to every franz-go client the package makes: TLS
	// (kgo.DialTLSConfig), SASL (kgo.SASL), a dialer, hooks. They come
	// first, so the settings postbox's guarantees rest on (manual commits,
	// read-committed fetches, acks from every in-sync replica, the
	// cooperative balancer) override them.
	ClientOptions []kgo.Opt
}

// clientOpts are the options of a client of brokers: o.ClientOptions, then
// what every client of the package has (the brokers, the client ID, quick
// metadata refreshes, the logger), then own.
func (o Options) clientOpts(brokers []string, own ...kgo.Opt) []kgo.Opt {
	return slices.Concat(o.ClientOptions, []kgo.Opt{
		kgo.SeedBrokers(brokers...),
		kgo.ClientID(o.ClientID),
		kgo.MetadataMinAge(metadataMinAge),
		kgo.WithLogger(kgoLogger{o.Logger}),
	}, own)
}

// producerOpts are clientOpts for a client that writes: a write returns
// once all in-sync replicas have it, within PublishTimeout.
func (o Options) producerOpts(brokers []string, own ...kgo.Opt) []kgo.Opt {
	return o.clientOpts(brokers, append([]kgo.Opt{
		kgo.RequiredAcks(kgo.AllISRAcks()), // idempotent writes are the default
		kgo.RecordDeliveryTimeout(o.PublishTimeout),
	}, own...)...)
}

// WithDefaults returns a copy of o with every unset field set to its
// default. Group stays empty: it defaults per topic (see Options.Group).
func (o Options) WithDefaults() Options {
	o.ClientID = cmp.Or(o.ClientID, "postbox")
	o.BufferSize = cmp.Or(o.BufferSize, 512)
	o.CommitInterval = cmp.Or(o.CommitInterval, time.Second)
	o.RevokeTimeout = cmp.Or(o.RevokeTimeout, 10*time.Second)
	o.SessionTimeout = cmp.Or(o.SessionTimeout, 45*time.Second)
	o.RebalanceTimeout = cmp.Or(o.RebalanceTimeout, 60*time.Second)
	o.FetchMaxWait = cmp.Or(o.FetchMaxWait, 500*time.Millisecond)
	o.PublishTimeout = cmp.Or(o.PublishTimeout, 30*time.Second)
	o.Logger = cmp.Or(o.Logger, zap.NewNop())
	return o
}

// validate rejects settings that cannot work, naming the field and the fix.
// It expects o.WithDefaults() applied.
func (o Options) validate(brokers []string, topic string) error {
	var errs []error
	if len(brokers) == 0 {
		errs = append(errs, errors.New("no brokers: pass at least one host:port, such as 127.0.0.1:9092"))
	}
	if err := validTopic(topic); err != nil {
		errs = append(errs, err)
	}
	if o.BufferSize < 1 {
		errs = append(errs, fmt.Errorf("Options.BufferSize is %d: it must be at least 1", o.BufferSize))
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"CommitInterval", o.CommitInterval},
		{"RevokeTimeout", o.RevokeTimeout},
		{"SessionTimeout", o.SessionTimeout},
		{"RebalanceTimeout", o.RebalanceTimeout},
		{"FetchMaxWait", o.FetchMaxWait},
		{"PublishTimeout", o.PublishTimeout},
	} {
		if d.v < 0 {
			errs = append(errs, fmt.Errorf("Options.%s is %v: it must be positive (zero picks the default)", d.name, d.v))
		}
	}
	if o.RevokeTimeout >= o.RebalanceTimeout {
		errs = append(errs, fmt.Errorf("Options.RevokeTimeout (%v) must be shorter than Options.RebalanceTimeout (%v), or the group evicts this consumer while it waits", o.RevokeTimeout, o.RebalanceTimeout))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("kafka: invalid options: %w", err)
	}
	return nil
}

// validTopic checks a name against Kafka's rules for topic names.
func validTopic(topic string) error {
	if topic == "" || topic == "." || topic == ".." {
		return fmt.Errorf("topic %q is not a valid Kafka topic name", topic)
	}
	// The DLQ topic adds ".dlq"; Kafka allows 249 characters.
	if len(topic) > 249-len(dlqSuffix) {
		return fmt.Errorf("topic %q is longer than %d characters", topic, 249-len(dlqSuffix))
	}
	for _, r := range topic {
		ok := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-'
		if !ok {
			return fmt.Errorf("topic %q has %q: Kafka topic names use only letters, digits, '.', '_' and '-'", topic, r)
		}
	}
	return nil
}
