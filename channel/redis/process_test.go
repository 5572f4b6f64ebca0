//go:build unix

package redis_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/postbox-dev/postbox/channel"
	"github.com/postbox-dev/postbox/channel/channeltest"
	"github.com/postbox-dev/postbox/channel/internal/backendtest"
	"github.com/postbox-dev/postbox/channel/redis"
	"github.com/postbox-dev/postbox/internal/testenv"
)

// The test binary doubles as a helper consumer process for
// TestLeasesAcrossProcesses, of the mailbox "ADDR|MAILBOX" names: the
// server may be a container only the test process knows of.
func TestMain(m *testing.M) {
	backendtest.Main(m, func(ctx context.Context, name string) (*redis.Mailbox, error) {
		addr, mailbox, _ := strings.Cut(name, "|")
		return redis.Open(ctx, addr, mailbox, redis.Options{})
	}, func(mb *redis.Mailbox, owner string, leaseTTL time.Duration) channel.Consumer {
		return mb.Consumer(redis.ConsumerOptions{Owner: owner, LeaseTTL: leaseTTL, MaxWait: 50 * time.Millisecond})
	})
}

func TestLeasesAcrossProcesses(t *testing.T) {
	addr := testenv.Redis(t)
	channeltest.RunAcrossProcesses(t, func(t *testing.T) channeltest.ProcessMailbox {
		const partitions = 4
		name := freshMailbox(t)
		mb := open(t, name, redis.Options{Partitions: partitions})
		rc := testenv.RedisClient(t)
		return channeltest.ProcessMailbox{
			Name:       addr + "|" + name,
			Partitions: partitions,
			Publisher:  mb.Publisher(),
			// Acked entries are deleted: every stream empties.
			Drained: func(t *testing.T) bool {
				for p := range partitions {
					n, err := rc.XLen(context.Background(), fmt.Sprintf("{postbox:%s}:s:%d", name, p)).Result()
					if err != nil {
						t.Fatal(err)
					}
					if n > 0 {
						return false
					}
				}
				return true
			},
		}
	})
}
