package backend_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/postbox-dev/postbox/backend"
	"github.com/postbox-dev/postbox/channel"
)

// A program that only publishes opens the mailbox and uses its Publisher.
func ExampleOpenMailbox() {
	dir, _ := os.MkdirTemp("", "postbox-example")
	defer os.RemoveAll(dir)
	ctx := context.Background()

	mb, err := backend.OpenMailbox(ctx, "sqlite:"+filepath.Join(dir, "postbox.db"), backend.MailboxOptions{Partitions: 4})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer mb.Close()
	err = mb.Publisher.Publish(ctx, channel.Message{
		ID:      "order-1001",
		Address: channel.Address{Type: "order", ID: "1001"},
		Payload: []byte(`{"item":"book"}`),
	})
	fmt.Println(mb.Backend, mb.Partitions, err)

	_, err = backend.OpenMailbox(ctx, "kafka:localhost:9092/orders", backend.MailboxOptions{})
	fmt.Println(err)
	// Output:
	// sqlite 4 <nil>
	// mailbox URL "kafka:localhost:9092/orders": missing // after kafka:; use kafka://HOST:PORT[,HOST:PORT]/TOPIC
}

// The journal of a worker, here in memory.
func ExampleOpenJournal() {
	j, err := backend.OpenJournal(context.Background(), "memory:", backend.JournalOptions{})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer j.Close()
	seq, err := j.LastSeq(context.Background(), "order/1001")
	fmt.Println(seq, err)
	// Output: 0 <nil>
}
