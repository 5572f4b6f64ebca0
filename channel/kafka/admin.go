package kafka

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Defaults of EnsureTopics.
const (
	DefaultPartitions  = 12
	DefaultReplication = 1
)

// EnsureTopics creates topic and its dead-letter topic DLQTopic(topic) when
// they are missing, with the given partition count and replication factor
// (0 picks the default), and waits until every partition has a leader. The
// dead-letter topic is compacted, so a purged or redriven dead letter is
// eventually gone for good. Existing topics are left as they are.
func EnsureTopics(ctx context.Context, brokers []string, topic string, partitions int32, replication int16, clientOpts ...kgo.Opt) error {
	if partitions <= 0 {
		partitions = DefaultPartitions
	}
	if replication <= 0 {
		replication = DefaultReplication
	}
	if len(brokers) == 0 {
		return errors.New("kafka: EnsureTopics: no brokers: pass at least one host:port, such as 127.0.0.1:9092")
	}
	if err := validTopic(topic); err != nil {
		return fmt.Errorf("kafka: EnsureTopics: %w", err)
	}
	// kadm answers from the client's metadata cache; a short minimum age
	// lets the wait below see new topics at once.
	cl, err := kgo.NewClient(append(slices.Clone(clientOpts), kgo.SeedBrokers(brokers...), kgo.MetadataMinAge(50*time.Millisecond))...)
	if err != nil {
		return fmt.Errorf("kafka: EnsureTopics: %w", err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)

	topics := []string{topic, DLQTopic(topic)}
	missing, err := missingTopics(ctx, adm, brokers, topics)
	if err != nil {
		return err
	}
	for _, t := range missing {
		var configs map[string]*string
		if t == DLQTopic(topic) {
			compact := "compact"
			configs = map[string]*string{"cleanup.policy": &compact}
		}
		resps, err := adm.CreateTopics(ctx, partitions, replication, configs, t)
		if err != nil {
			return fmt.Errorf("kafka: create topic %q: %w%s", t, err, unreachableHint(brokers))
		}
		r := resps[t]
		if r.Err == nil || errors.Is(r.Err, kerr.TopicAlreadyExists) {
			continue
		}
		hint := createHint(r.Err)
		if r.ErrMessage != "" {
			hint = " (" + r.ErrMessage + ")" + hint
		}
		return fmt.Errorf("kafka: create topic %q with %d partitions and replication factor %d: %w%s",
			t, partitions, replication, r.Err, hint)
	}

	// A new topic's partitions get leaders a moment after creation; until
	// then producing to it fails.
	for {
		details, err := adm.ListTopics(ctx, topics...)
		if err == nil && allLed(details, topics) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("kafka: topics %v were created but have no partition leaders yet: %w", topics, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// missingTopics returns those of topics that do not exist.
func missingTopics(ctx context.Context, adm *kadm.Client, brokers []string, topics []string) ([]string, error) {
	details, err := adm.ListTopics(ctx, topics...)
	if err != nil {
		return nil, fmt.Errorf("kafka: list topics: %w%s", err, unreachableHint(brokers))
	}
	var missing []string
	for _, t := range topics {
		d, ok := details[t]
		switch {
		case !ok || errors.Is(d.Err, kerr.UnknownTopicOrPartition):
			missing = append(missing, t)
		case d.Err != nil:
			return nil, fmt.Errorf("kafka: describe topic %q: %w", t, d.Err)
		}
	}
	return missing, nil
}

func allLed(details kadm.TopicDetails, topics []string) bool {
	for _, t := range topics {
		d, ok := details[t]
		if !ok || d.Err != nil || len(d.Partitions) == 0 {
			return false
		}
		for _, p := range d.Partitions {
			if p.Err != nil || p.Leader < 0 {
				return false
			}
		}
	}
	return true
}

// partitionsOf asks the cluster cl is a client of how many partitions
// topic has, or returns an error that says how to create it.
func partitionsOf(ctx context.Context, cl *kgo.Client, brokers []string, topic string) (int, error) {
	details, err := kadm.NewClient(cl).ListTopics(ctx, topic)
	if err != nil {
		return 0, fmt.Errorf("describe topic %q: %w%s", topic, err, unreachableHint(brokers))
	}
	t, ok := details[topic]
	switch {
	case !ok || errors.Is(t.Err, kerr.UnknownTopicOrPartition):
		return 0, fmt.Errorf("topic %q does not exist: create it first, for example with EnsureTopics", topic)
	case t.Err != nil:
		return 0, fmt.Errorf("describe topic %q: %w", topic, t.Err)
	case len(t.Partitions) == 0:
		return 0, fmt.Errorf("topic %q has no partitions", topic)
	}
	return len(t.Partitions), nil
}

func createHint(err error) string {
	switch {
	case errors.Is(err, kerr.InvalidReplicationFactor):
		return ": the cluster has fewer brokers than the replication factor; lower it"
	case errors.Is(err, kerr.InvalidPartitions):
		return ": the partition count is out of the range the cluster allows"
	case errors.Is(err, kerr.TopicAuthorizationFailed), errors.Is(err, kerr.ClusterAuthorizationFailed):
		return ": this client may not create topics; ask an operator to create them"
	case errors.Is(err, kerr.PolicyViolation):
		return ": the cluster's create-topic policy refused it"
	}
	return ""
}

func unreachableHint(brokers []string) string {
	return fmt.Sprintf(" (brokers %v: is Kafka running there? scripts/kafka.sh start runs one for tests)", brokers)
}
