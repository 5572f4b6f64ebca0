package actorhost_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/postbox-dev/postbox/actorhost"
	"github.com/postbox-dev/postbox/channel"
	chsqlite "github.com/postbox-dev/postbox/channel/sqlite"
	jsqlite "github.com/postbox-dev/postbox/journal/sqlite"
)

// Greeter is an actor's state: JSON by default.
type Greeter struct {
	Greeted []string `json:"greeted"`
}

// An actor type of your own: register a handler over its state, publish
// messages to its addresses, run a host.
func Example() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "postbox-example-")
	defer os.RemoveAll(dir)
	db := filepath.Join(dir, "postbox.db")
	mailbox, _ := chsqlite.Open(db, chsqlite.Options{})
	defer mailbox.Close()
	j, _ := jsqlite.Open(db, jsqlite.Options{}) // the journal can share the file
	defer j.Close()

	reg := actorhost.NewRegistry()
	actorhost.Register(reg, "greeter", func(ctx *actorhost.Context, s *Greeter, m actorhost.Message) error {
		// Calls to the outside world go through a side effect: journaled,
		// never repeated on replay, with a stable idempotency key.
		greeting, err := actorhost.Effect(ctx, "greet", func(_ context.Context, key string) (string, error) {
			return "hello, " + string(m.Payload), nil
		})
		if err != nil {
			return err
		}
		s.Greeted = append(s.Greeted, greeting)
		return nil
	})

	ada := channel.Address{Type: "greeter", ID: "ada"}
	mailbox.Publisher().Publish(ctx,
		channel.Message{Address: ada, Payload: []byte("Ada")},
		channel.Message{Address: ada, Payload: []byte("Grace")})

	host, err := actorhost.New(actorhost.Config{
		Registry: reg, Journal: j, DeadLetters: mailbox.DLQ(),
		Consumer: mailbox.Consumer(chsqlite.ConsumerOptions{}),
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	host.Start(ctx)
	for host.Stats().Processed < 2 {
		time.Sleep(10 * time.Millisecond)
	}
	host.Stop(ctx)

	state, _ := reg.Replay(ctx, j, ada, actorhost.ReplayOptions{})
	fmt.Println(string(state.State))
	// Output: {"greeted":["hello, Ada","hello, Grace"]}
}

// Which partitions a running host holds, under which journal epochs: what
// a worker serves as GET /partitions.
func ExampleHost_Claims() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "postbox-example-")
	defer os.RemoveAll(dir)
	db := filepath.Join(dir, "postbox.db")
	mailbox, _ := chsqlite.Open(db, chsqlite.Options{Partitions: 2})
	defer mailbox.Close()
	j, _ := jsqlite.Open(db, jsqlite.Options{})
	defer j.Close()

	host, err := actorhost.New(actorhost.Config{
		Registry: actorhost.NewRegistry(), Journal: j, DeadLetters: mailbox.DLQ(),
		Consumer: mailbox.Consumer(chsqlite.ConsumerOptions{}),
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	host.Start(ctx)
	for len(host.Claims()) < 2 {
		time.Sleep(10 * time.Millisecond)
	}
	for _, c := range host.Claims() {
		fmt.Printf("partition %d, epoch %d, %d in flight\n", c.Partition, c.Epoch, c.InFlight)
	}
	host.Stop(ctx)
	fmt.Println(len(host.Claims()), "after Stop")
	// Output:
	// partition 0, epoch 1, 0 in flight
	// partition 1, epoch 1, 0 in flight
	// 0 after Stop
}
