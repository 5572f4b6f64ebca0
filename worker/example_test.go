package worker_test

import (
	"fmt"
	"os"

	"github.com/postbox-dev/postbox/actorhost"
	"github.com/postbox-dev/postbox/worker"
)

// A worker program of one's own: register the types, hand the registry to
// Main. Here it runs "state" on an actor the journal has never seen, which
// prints the type's zero state; os.Exit(worker.Main(reg)) would take the
// command line of the process.
func ExampleMain() {
	type order struct {
		Items []string `json:"items"`
		Paid  bool     `json:"paid"`
	}
	reg := actorhost.NewRegistry()
	actorhost.Register(reg, "order", func(c *actorhost.Context, s *order, m actorhost.Message) error {
		s.Items = append(s.Items, string(m.Payload))
		return nil
	})
	code := worker.Main(reg, worker.WithArgs("state", "order/1001", "--journal", "memory:"), worker.WithOutput(os.Stdout, os.Stderr))
	fmt.Println("exit status", code)
	// Output:
	// {
	//   "items": null,
	//   "paid": false
	// }
	// exit status 0
}
