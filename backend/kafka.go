package backend

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"

	"github.com/postbox-dev/postbox/channel"
	"github.com/postbox-dev/postbox/channel/kafka"
)

// parseKafkaURL splits kafka://HOST:PORT[,HOST:PORT]/TOPIC.
func parseKafkaURL(url, rest string) (brokers []string, topic string, err error) {
	bad := func(why string) error {
		return badURL("mailbox", url, "%s; use kafka://HOST:PORT[,HOST:PORT]/TOPIC", why)
	}
	if !strings.HasPrefix(rest, "//") {
		return nil, "", bad("missing // after kafka:")
	}
	hosts, topic, ok := strings.Cut(rest[2:], "/")
	if !ok || topic == "" || strings.Contains(topic, "/") {
		return nil, "", bad("missing topic")
	}
	for _, h := range strings.Split(hosts, ",") {
		if _, port, err := net.SplitHostPort(h); err != nil || port == "" {
			return nil, "", bad(fmt.Sprintf("broker %q is not HOST:PORT", h))
		}
		brokers = append(brokers, h)
	}
	return brokers, topic, nil
}

func openKafka(ctx context.Context, url, rest string, opts MailboxOptions) (*Mailbox, error) {
	brokers, topic, err := parseKafkaURL(url, rest)
	if err != nil {
		return nil, err
	}
	kopts := kafka.Options{Logger: opts.Logger, SessionTimeout: opts.SessionTimeout, ClientOptions: opts.KafkaClientOptions}
	partitions := opts.Partitions
	if partitions == 0 {
		partitions = kafka.DefaultPartitions
	}
	if opts.CreateTopics {
		replication := opts.Replication
		if replication == 0 {
			replication = kafka.DefaultReplication
		}
		if err := kafka.EnsureTopics(ctx, brokers, topic, int32(partitions), int16(replication), opts.KafkaClientOptions...); err != nil {
			return nil, fmt.Errorf("mailbox %s: cannot create topics %s and %s: %w", url, topic, kafka.DLQTopic(topic), err)
		}
	}
	pub, err := kafka.OpenPublisher(brokers, topic, kopts)
	if err != nil {
		return nil, fmt.Errorf("mailbox %s: %w", url, err)
	}
	dl, err := kafka.OpenDLQ(brokers, topic, kopts)
	if err != nil {
		pub.Close()
		return nil, fmt.Errorf("mailbox %s: %w", url, err)
	}
	var consumers []*kafka.Consumer
	return &Mailbox{
		Name: "kafka:" + topic, Backend: "kafka", Partitions: partitions,
		Publisher: pub,
		NewConsumer: func() channel.Consumer {
			c, err := kafka.OpenConsumer(brokers, topic, kopts)
			if err != nil {
				return failedConsumer{err: err, mailbox: "kafka:" + topic}
			}
			consumers = append(consumers, c)
			return c
		},
		DLQ: dl,
		close: func() error {
			var errs []error
			for _, c := range consumers {
				errs = append(errs, c.Close())
			}
			return errors.Join(append(errs, pub.Close(), dl.Close())...)
		},
	}, nil
}

// failedConsumer reports an error that opening a consumer hit, from Run.
type failedConsumer struct {
	err     error
	mailbox string
}

func (f failedConsumer) Run(context.Context, func(channel.Claim)) error { return f.err }
func (f failedConsumer) Backend() string                                { return "kafka" }
func (f failedConsumer) Mailbox() string                                { return f.mailbox }
func (f failedConsumer) Close() error                                   { return nil }
