package sqlite_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/postbox-dev/postbox/channel"
	"github.com/postbox-dev/postbox/channel/sqlite"
)

// Publish a message to an actor's mailbox and read it back the way a worker
// does: claim a partition, receive, ack, release.
func Example() {
	dir, err := os.MkdirTemp("", "postbox-example")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer os.RemoveAll(dir)

	// One partition keeps the example to one claim.
	mb, err := sqlite.Open(filepath.Join(dir, "postbox.db"), sqlite.Options{Partitions: 1})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer mb.Close()

	ctx := context.Background()
	pub := mb.Publisher()
	err = pub.Publish(ctx, channel.Message{
		ID:      "order-1",
		Address: channel.Address{Type: "counter", ID: "42"},
		Payload: []byte("increment"),
		Headers: map[string]string{"source": "example"},
	})
	if err != nil {
		fmt.Println(err)
		return
	}

	runCtx, stop := context.WithCancel(ctx)
	got := make(chan channel.Message, 1)
	done := make(chan error, 1)
	c := mb.Consumer(sqlite.ConsumerOptions{})
	go func() {
		done <- c.Run(runCtx, func(cl channel.Claim) {
			for m := range cl.Messages() {
				got <- m
				_ = cl.Ack(ctx, m) // after the work is done
			}
			// Messages closed: the consumer is stopping.
			if err := cl.Release(ctx); err != nil { // makes the acks durable
				fmt.Println(err)
			}
		})
	}()

	select {
	case m := <-got:
		fmt.Printf("%s %s %s source=%s\n", m.Address, m.ID, m.Payload, m.Headers["source"])
	case <-time.After(10 * time.Second):
		fmt.Println("no message")
	}
	stop()
	if err := <-done; err != nil { // returns once the claim is released
		fmt.Println(err)
	}
	// Output: counter/42 order-1 increment source=example
}
