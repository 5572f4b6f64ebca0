package backends

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/postbox-dev/postbox/channel"
	chredis "github.com/postbox-dev/postbox/channel/redis"
)

// openRedis opens redis://HOST:PORT/MAILBOX.
func openRedis(url, rest string, opts MailboxOptions) (*Mailbox, error) {
	addr, name, ok := strings.Cut(strings.TrimPrefix(rest, "//"), "/")
	if !strings.HasPrefix(rest, "//") || addr == "" || !ok || name == "" || strings.ContainsAny(name, "{}/") {
		return nil, usagef("--mailbox %q: want redis://HOST:PORT/MAILBOX (a mailbox name without braces or slashes)", url)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	mb, err := chredis.Open(ctx, addr, name, chredis.Options{Partitions: opts.Partitions})
	if err != nil {
		return nil, fmt.Errorf("--mailbox %s: %w", url, err)
	}
	return &Mailbox{
		Name: "redis:" + name, Backend: "redis", Partitions: mb.Partitions(),
		Publisher: mb.Publisher(),
		NewConsumer: func() channel.Consumer {
			return mb.Consumer(chredis.ConsumerOptions{LeaseTTL: opts.LeaseTTL})
		},
		DLQ:   mb.DLQ(),
		close: mb.Close,
	}, nil
}
