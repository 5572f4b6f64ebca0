package redis_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/postbox-dev/postbox/channel"
	"github.com/postbox-dev/postbox/channel/redis"
	"github.com/postbox-dev/postbox/dlq"
	"github.com/postbox-dev/postbox/dlq/dlqtest"
	"github.com/postbox-dev/postbox/internal/testenv"
)

// envelopeOf is the dead letter of a delivered message, one attempt for
// each delivery of its ID in received.
func envelopeOf(m channel.Message, received []channel.Message) dlq.Envelope {
	attempts := 0
	for _, r := range received {
		if r.ID == m.ID {
			attempts++
		}
	}
	return dlq.Envelope{
		MessageID: m.ID,
		Address:   m.Address.String(),
		Payload:   m.Payload,
		Headers:   m.Headers,
		Source: dlq.Source{Backend: redis.Backend, Mailbox: m.Mailbox, Partition: m.Partition,
			Offset: m.Offset, Published: m.PublishedAt},
		Attempts: attempts,
		Errors:   []dlq.AttemptError{{Attempt: attempts, Error: "boom", At: time.Now()}},
		Reason:   "permanent error",
		Worker:   "test",
	}
}

func TestDLQConformance(t *testing.T) {
	dlqtest.Run(t, func(t *testing.T) dlqtest.Harness {
		mb := open(t, freshMailbox(t), redis.Options{Partitions: 4})
		return dlqtest.Harness{
			Store:      mb.DLQ(),
			Backend:    redis.Backend,
			Mailbox:    mb.Name(),
			Partitions: mb.Partitions(),
			Next:       dlqtest.Consume(func() channel.Consumer { return mb.Consumer(testConsumerOptions) }),
		}
	})
}

// A dead letter's ID is derived from its message, and a second Put
// replaces the stream entry rather than adding one.
func TestDeadLetterEntries(t *testing.T) {
	ctx := t.Context()
	mb := open(t, freshMailbox(t), redis.Options{Partitions: 1})
	store := mb.DLQ()
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for i, id := range []string{"m1", "m2", "m3", "m1"} {
		env := dlq.Envelope{MessageID: id, Address: "counter/7", Attempts: i + 1, DeadLetteredAt: t0.Add(time.Duration(i) * time.Second)}
		if err := store.Put(ctx, env); err != nil {
			t.Fatalf("put %s: %v", id, err)
		}
	}
	if n, err := testenv.RedisClient(t).XLen(ctx, "{postbox:"+mb.Name()+"}:dlq").Result(); err != nil || n != 3 {
		t.Errorf("dead-letter stream holds %d entries (%v), want 3: a second put replaces the entry", n, err)
	}
	envs, err := store.List(ctx)
	if err != nil {
		t.Fatalf("list: %v", err)
	}
	for _, e := range envs {
		if e.ID != dlq.IDOf(e.MessageID) {
			t.Errorf("dead letter of %s has ID %s, want dlq.IDOf %s", e.MessageID, e.ID, dlq.IDOf(e.MessageID))
		}
	}
}

// Redrive keeps each actor's order across many dead letters on many
// partitions, and a redriven copy dead-lettered again redrives as id.r2.
func TestRedriveKeepsOrderPerActor(t *testing.T) {
	ctx := t.Context()
	mb := open(t, freshMailbox(t), redis.Options{Partitions: 4})
	var msgs []channel.Message
	for i := range 40 {
		msgs = append(msgs, channel.Message{
			ID:      fmt.Sprintf("o-%02d", i),
			Address: channel.Address{Type: "order", ID: fmt.Sprint(i % 5)},
			Payload: []byte(fmt.Sprint(i)),
		})
	}
	if err := mb.Publisher().Publish(ctx, msgs...); err != nil {
		t.Fatal(err)
	}
	store := mb.DLQ()
	got := consume(t, mb, 40, nil)
	// Dead-letter them newest first, so that age order is the reverse of
	// publish order.
	for i := len(got) - 1; i >= 0; i-- {
		if err := store.Put(ctx, envelopeOf(got[i], got)); err != nil {
			t.Fatal(err)
		}
	}
	if n, err := store.Redrive(ctx); err != nil || n != 40 {
		t.Fatalf("redrive all: %d, %v", n, err)
	}
	back := consume(t, mb, 40, nil)
	last := map[string]int{}
	for _, m := range back {
		var i int
		fmt.Sscan(string(m.Payload), &i)
		if prev, ok := last[m.Address.String()]; ok && i < prev {
			t.Errorf("actor %s: message %d redriven after %d", m.Address, i, prev)
		}
		last[m.Address.String()] = i
		if m.ID != fmt.Sprintf("o-%02d.r1", i) || m.Headers[dlq.HeaderRedriveOf] != fmt.Sprintf("o-%02d", i) {
			t.Errorf("redriven message %d: ID %s, headers %v", i, m.ID, m.Headers)
		}
	}
	if err := store.Put(ctx, envelopeOf(back[0], back)); err != nil {
		t.Fatal(err)
	}
	if n, err := store.Redrive(ctx); err != nil || n != 1 {
		t.Fatalf("redrive again: %d, %v", n, err)
	}
	if again := consume(t, mb, 1, nil); again[0].ID != back[0].ID[:len(back[0].ID)-1]+"2" {
		t.Errorf("second redrive gave ID %s, want %s.r2", again[0].ID, back[0].ID[:len(back[0].ID)-3])
	}
}
