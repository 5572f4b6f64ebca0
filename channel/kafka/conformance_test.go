package kafka

import (
	"testing"
	"time"

	"github.com/postbox-dev/postbox/channel"
	"github.com/postbox-dev/postbox/channel/channeltest"
	"github.com/postbox-dev/postbox/internal/testenv"
)

func TestConformance(t *testing.T) {
	brokers := testenv.Kafka(t)
	features := channeltest.Features{
		Leases:  true, // consumer-group partition assignment
		Timeout: 60 * time.Second,
	}
	channeltest.Run(t, features, func(t *testing.T) channeltest.Mailbox {
		const partitions = 4
		topic := newTopic(t, brokers, partitions)
		pub, err := OpenPublisher(brokers, topic, Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { pub.Close() })
		return channeltest.Mailbox{
			Publisher:  pub,
			Partitions: partitions,
			NewConsumer: func(t *testing.T) channel.Consumer {
				c, err := OpenConsumer(brokers, topic, fastOptions())
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { c.Close() })
				return c
			},
		}
	})
}
