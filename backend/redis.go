package backend

import (
	"context"
	"fmt"
	"strings"

	"github.com/postbox-dev/postbox/channel"
	chredis "github.com/postbox-dev/postbox/channel/redis"
)

// openRedis opens redis://HOST:PORT/MAILBOX.
func openRedis(ctx context.Context, url, rest string, opts MailboxOptions) (*Mailbox, error) {
	addr, name, ok := strings.Cut(strings.TrimPrefix(rest, "//"), "/")
	if !strings.HasPrefix(rest, "//") || addr == "" || !ok || name == "" || strings.ContainsAny(name, "{}/") {
		return nil, badURL("mailbox", url, "want redis://HOST:PORT/MAILBOX (a mailbox name without braces or slashes)")
	}
	mb, err := chredis.Open(ctx, addr, name, chredis.Options{Partitions: opts.Partitions})
	if err != nil {
		return nil, fmt.Errorf("mailbox %s: %w", url, err)
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
