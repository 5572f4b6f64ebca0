// Command orders is a worker program of its own, built on postbox's public
// packages only: a cart actor that keeps the items added to it (state
// only, no side effect) and an order actor whose payment is a side effect,
// made once per order with a stable idempotency key.
//
//	orders run --mailbox kafka://127.0.0.1:9092/orders --journal postgres://…
//	orders state cart/7
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"sync"

	"github.com/postbox-dev/postbox/actorhost"
	"github.com/postbox-dev/postbox/worker"
)

// Cart is a cart actor's state: its items in the order they were added.
type Cart struct {
	Items []string `json:"items"`
}

// CartMessage adds an item to a cart.
type CartMessage struct {
	Add string `json:"add"`
}

func handleCart(c *actorhost.Context, s *Cart, m actorhost.Message) error {
	var msg CartMessage
	if err := json.Unmarshal(m.Payload, &msg); err != nil || msg.Add == "" {
		return actorhost.Permanent(fmt.Errorf("cart: want {\"add\": \"<item>\"}, got %q", m.Payload))
	}
	s.Items = append(s.Items, msg.Add)
	return nil
}

// Order is an order actor's state.
type Order struct {
	Amount    int64  `json:"amount"`
	PaymentID string `json:"payment_id,omitempty"`
	Status    string `json:"status"` // "paid", then "shipped"
}

// OrderMessage pays an order (Amount) or ships a paid one (Ship).
type OrderMessage struct {
	Amount int64 `json:"amount,omitempty"`
	Ship   bool  `json:"ship,omitempty"`
}

// payments stands for a payment provider: it charges once per
// idempotency key, and appends each charge it makes to a file.
type payments struct {
	mu   sync.Mutex
	path string
	f    *os.File
}

func (p *payments) open(context.Context) (func(), error) {
	if p.path == "" {
		return nil, nil
	}
	f, err := os.OpenFile(p.path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return nil, worker.Usagef("--payments-log %q: %v", p.path, err)
	}
	p.f = f
	return func() { f.Close() }, nil
}

// charge makes the payment and returns its ID.
func (p *payments) charge(key, order string, amount int64) (string, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.f != nil {
		line, _ := json.Marshal(map[string]any{"key": key, "order": order, "amount": amount})
		if _, err := p.f.Write(append(line, '\n')); err != nil {
			return "", err
		}
		if err := p.f.Sync(); err != nil {
			return "", err
		}
	}
	return "pay-" + key, nil
}

func (p *payments) handleOrder(c *actorhost.Context, s *Order, m actorhost.Message) error {
	var msg OrderMessage
	if err := json.Unmarshal(m.Payload, &msg); err != nil {
		return actorhost.Permanent(fmt.Errorf("order: %w", err))
	}
	switch {
	case msg.Ship:
		if s.Status != "paid" {
			return actorhost.Permanent(errors.New("order: cannot ship an order that is not paid"))
		}
		s.Status = "shipped"
	case msg.Amount > 0:
		if s.Status != "" {
			return actorhost.Permanent(errors.New("order: already paid"))
		}
		id, err := actorhost.Effect(c, "charge", func(_ context.Context, key string) (string, error) {
			return p.charge(key, c.Address().String(), msg.Amount)
		})
		if err != nil {
			return err
		}
		s.Amount, s.PaymentID, s.Status = msg.Amount, id, "paid"
	default:
		return actorhost.Permanent(fmt.Errorf("order: want {\"amount\": N} or {\"ship\": true}, got %q", m.Payload))
	}
	return nil
}

func main() {
	pay := &payments{}
	reg := actorhost.NewRegistry()
	if err := actorhost.Register(reg, "cart", handleCart); err != nil {
		panic(err)
	}
	if err := actorhost.Register(reg, "order", pay.handleOrder); err != nil {
		panic(err)
	}
	os.Exit(worker.Main(reg,
		worker.WithName("orders"),
		worker.WithRunFlags(func(fs *flag.FlagSet) {
			fs.StringVar(&pay.path, "payments-log", "", "append one JSON line per payment made to PATH")
		}),
		worker.WithRunHook(pay.open),
	))
}
