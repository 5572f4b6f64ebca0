package memory_test

import (
	"context"
	"fmt"

	"github.com/postbox-dev/postbox/channel"
	"github.com/postbox-dev/postbox/channel/memory"
)

// delivered is one message and the claim that delivered it.
type delivered struct {
	claim channel.Claim
	msg   channel.Message
}

// runConsumer runs a consumer of mb that sends every delivery to got and
// releases each claim when its Messages closes. stop ends it.
func runConsumer(mb *memory.Mailbox, got chan<- delivered) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- mb.Consumer().Run(ctx, func(cl channel.Claim) {
			for m := range cl.Messages() {
				got <- delivered{cl, m}
			}
			_ = cl.Release(context.Background()) // nothing to do after Lost
		})
	}()
	return func() {
		cancel()
		if err := <-done; err != nil {
			fmt.Println(err)
		}
	}
}

// Publish a message to an actor's mailbox and read it back the way a worker
// does: claim a partition, receive, ack, release.
func Example() {
	mb := memory.New(memory.Options{Name: "example", Partitions: 1})
	defer mb.Close()

	ctx := context.Background()
	err := mb.Publisher().Publish(ctx, channel.Message{
		Address: channel.Address{Type: "counter", ID: "42"},
		Payload: []byte("increment"),
	})
	if err != nil {
		fmt.Println(err)
		return
	}

	got := make(chan delivered, 1)
	stop := runConsumer(mb, got)
	d := <-got
	fmt.Printf("%s %s %s offset=%d\n", d.msg.Address, d.msg.ID, d.msg.Payload, d.msg.Offset)
	if err := d.claim.Ack(ctx, d.msg); err != nil {
		fmt.Println(err)
	}
	stop()
	fmt.Println("pending:", mb.Pending())
	// Output:
	// counter/42 example/0/1 increment offset=1
	// pending: 0
}

// Lose the partition under a worker: its claim's acks are ignored from then
// on, and the next claim gets the message again, with the same ID and
// offset.
func ExampleMailbox_Lose() {
	mb := memory.New(memory.Options{Partitions: 1})
	defer mb.Close()
	ctx := context.Background()
	_ = mb.Publisher().Publish(ctx, channel.Message{
		ID:      "m1",
		Address: channel.Address{Type: "counter", ID: "7"},
	})

	got := make(chan delivered, 1)
	stop := runConsumer(mb, got)
	defer stop()
	first := <-got
	fmt.Println("delivered", first.msg.ID, "at offset", first.msg.Offset)

	mb.Lose(0)
	<-first.claim.Lost()
	_ = first.claim.Ack(ctx, first.msg) // too late: ignored
	fmt.Println("pending after a late ack:", mb.Pending())

	again := <-got
	fmt.Println("delivered", again.msg.ID, "at offset", again.msg.Offset)
	_ = again.claim.Ack(ctx, again.msg)
	fmt.Println("acked:", mb.Acked(0))
	// Output:
	// delivered m1 at offset 1
	// pending after a late ack: 1
	// delivered m1 at offset 1
	// acked: [m1]
}
