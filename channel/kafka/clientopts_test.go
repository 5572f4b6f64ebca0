package kafka

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/postbox-dev/postbox/channel"
	"github.com/postbox-dev/postbox/dlq"
	"github.com/postbox-dev/postbox/internal/testenv"
)

// connects counts broker connections per client, through a hook passed
// as a client option: proof that ClientOptions (TLS, SASL, …) reach it.
type connects struct {
	mu sync.Mutex
	n  map[string]int
}

func (c *connects) hook(name string) kgo.Opt { return kgo.WithHooks(connectHook{c, name}) }

func (c *connects) count(name string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[name]
}

type connectHook struct {
	c    *connects
	name string
}

func (h connectHook) OnBrokerConnect(_ kgo.BrokerMetadata, _ time.Duration, _ net.Conn, err error) {
	if err == nil {
		h.c.mu.Lock()
		h.c.n[h.name]++
		h.c.mu.Unlock()
	}
}

// ClientOptions go to every client the package makes: EnsureTopics, the
// publisher, the consumer (and its partition count lookup), the DLQ.
func TestClientOptionsReachEveryClient(t *testing.T) {
	t.Parallel()
	brokers := testenv.Kafka(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := &connects{n: map[string]int{}}
	topic := newTopic(t, brokers, 2)
	if err := EnsureTopics(ctx, brokers, topic, 2, 1, c.hook("ensure")); err != nil {
		t.Fatal(err)
	}
	with := func(name string) Options {
		o := fastOptions()
		o.ClientOptions = []kgo.Opt{c.hook(name)}
		return o
	}
	pub, err := OpenPublisher(brokers, topic, with("publisher"))
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	m := channel.Message{ID: "m1", Address: channel.Address{Type: "t", ID: "1"}, Payload: []byte("p")}
	if err := pub.Publish(ctx, m); err != nil {
		t.Fatal(err)
	}
	h := startHost(t, brokers, topic, with("consumer"))
	h.next(time.Minute)
	h.stop()
	dl, err := OpenDLQ(brokers, topic, with("dlq"))
	if err != nil {
		t.Fatal(err)
	}
	defer dl.Close()
	if err := dl.Put(ctx, dlq.Envelope{MessageID: "m1", Address: "t/1", Payload: []byte("p"), Reason: "permanent error"}); err != nil {
		t.Fatal(err)
	}
	written := c.count("dlq") // the DLQ's writing client
	if _, err := dl.List(ctx); err != nil {
		t.Fatal(err)
	}
	if written == 0 || c.count("dlq") == written {
		t.Errorf("DLQ connections through the hook: %d after Put, %d after List; want both of its clients to use it", written, c.count("dlq"))
	}
	for _, name := range []string{"ensure", "publisher", "consumer"} {
		if c.count(name) == 0 {
			t.Errorf("the %s client made no connection through the hook given in its client options", name)
		}
	}
}
