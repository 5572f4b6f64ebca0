//go:build unix

package backendtest

import (
	"context"
	"io"
	"os"
	"testing"
	"time"

	"github.com/postbox-dev/postbox/channel"
	"github.com/postbox-dev/postbox/channel/channeltest"
)

// Main is a backend's TestMain: it runs m's tests or, in a helper process
// of channeltest.RunAcrossProcesses, consumes the mailbox open opens by
// its name, through the consumer that consumer makes of it; then it exits.
func Main[M io.Closer](m *testing.M, open func(ctx context.Context, name string) (M, error), consumer func(mb M, owner string, leaseTTL time.Duration) channel.Consumer) {
	os.Exit(channeltest.Main(m, func(ctx context.Context, name, owner string, leaseTTL time.Duration) (channel.Consumer, io.Closer, error) {
		mb, err := open(ctx, name)
		if err != nil {
			return nil, nil, err
		}
		return consumer(mb, owner, leaseTTL), mb, nil
	}))
}
