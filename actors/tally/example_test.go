package tally_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/postbox-dev/postbox/actorhost"
	"github.com/postbox-dev/postbox/actors/tally"
	"github.com/postbox-dev/postbox/channel"
	chsqlite "github.com/postbox-dev/postbox/channel/sqlite"
	jsqlite "github.com/postbox-dev/postbox/journal/sqlite"
)

// A tally sums the "add" of its messages and counts them. A message
// delivered again with the same ID is applied once; a payload without an
// integer "add" is dead-lettered.
func Example() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "postbox-tally-")
	defer os.RemoveAll(dir)
	db := filepath.Join(dir, "postbox.db")
	mailbox, _ := chsqlite.Open(db, chsqlite.Options{})
	defer mailbox.Close()
	j, _ := jsqlite.Open(db, jsqlite.Options{})
	defer j.Close()

	reg := actorhost.NewRegistry()
	tally.Register(reg)

	a := channel.Address{Type: tally.Type, ID: "7"}
	mailbox.Publisher().Publish(ctx,
		channel.Message{ID: "m1", Address: a, Payload: []byte(`{"add":2}`)},
		channel.Message{ID: "m2", Address: a, Payload: []byte(`{"add":3}`)},
		channel.Message{ID: "m1", Address: a, Payload: []byte(`{"add":2}`)}, // a duplicate
		channel.Message{ID: "m3", Address: a, Payload: []byte(`{"add":"four"}`)})

	host, err := actorhost.New(actorhost.Config{
		Registry: reg, Journal: j, DeadLetters: mailbox.DLQ(),
		Consumer: mailbox.Consumer(chsqlite.ConsumerOptions{}),
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	host.Start(ctx)
	for st := host.Stats(); st.Processed+st.Deduplicated+st.DeadLettered < 4; st = host.Stats() {
		time.Sleep(10 * time.Millisecond)
	}
	host.Stop(ctx)

	state, _ := reg.Replay(ctx, j, a, actorhost.ReplayOptions{})
	letters, _ := mailbox.DLQ().List(ctx)
	fmt.Println(string(state.State))
	fmt.Println(letters[0].MessageID, letters[0].LastError())
	// Output:
	// {"value":5,"applied":2}
	// m3 permanent: tally: payload "{\"add\":\"four\"}" is not {"add": <int>}
}
