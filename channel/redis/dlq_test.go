package redis_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/postbox-dev/postbox/channel"
	"github.com/postbox-dev/postbox/channel/redis"
	"github.com/postbox-dev/postbox/dlq"
)

// envelopeOf is the dead letter of a delivered message.
func envelopeOf(m channel.Message) dlq.Envelope {
	return dlq.Envelope{
		MessageID: m.ID,
		Address:   m.Address.String(),
		Payload:   m.Payload,
		Headers:   m.Headers,
		Source: dlq.Source{Backend: redis.Backend, Mailbox: m.Mailbox, Partition: m.Partition,
			Offset: m.Offset, Published: m.PublishedAt},
		Attempts: m.Deliveries,
		Errors:   []dlq.AttemptError{{Attempt: m.Deliveries, Error: "boom", At: time.Now()}},
		Reason:   "permanent error",
		Worker:   "test",
	}
}

func TestDeadLetters(t *testing.T) {
	ctx := t.Context()
	// One partition, so that consumption order is publish order.
	mb := open(t, freshMailbox(t), redis.Options{Partitions: 1})
	store := mb.DLQ()
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	env := func(msgID string, offset int64, age time.Duration) dlq.Envelope {
		return dlq.Envelope{
			MessageID: msgID,
			Address:   "counter/7",
			Payload:   []byte("payload of " + msgID),
			Headers:   map[string]string{"trace": msgID},
			Source:    dlq.Source{Backend: redis.Backend, Mailbox: mb.Name(), Partition: 0, Offset: offset},
			Attempts:  3,
			Errors:    []dlq.AttemptError{{Attempt: 3, Error: "boom", At: t0}},
			Reason:    "attempts exhausted",
			Worker:    "w1",
			// The newest source offset is the oldest dead letter: redrive
			// must follow offsets, not age.
			DeadLetteredAt: t0.Add(age),
		}
	}
	for _, e := range []dlq.Envelope{env("m3", 30, 0), env("m1", 10, time.Second), env("m2", 20, 2*time.Second)} {
		if err := store.Put(ctx, e); err != nil {
			t.Fatalf("put %s: %v", e.MessageID, err)
		}
	}
	list := func() []dlq.Envelope {
		t.Helper()
		envs, err := store.List(ctx)
		if err != nil {
			t.Fatalf("list: %v", err)
		}
		return envs
	}
	first := list()
	// Putting the same message again keeps one dead letter, with its ID.
	again := env("m1", 10, time.Second)
	again.Attempts = 4
	if err := store.Put(ctx, again); err != nil {
		t.Fatalf("put again: %v", err)
	}
	envs := list()
	var order []string
	for _, e := range envs {
		order = append(order, e.MessageID)
	}
	if fmt.Sprint(order) != "[m3 m1 m2]" {
		t.Fatalf("list order %v, want oldest first [m3 m1 m2]", order)
	}
	if envs[1].ID != first[1].ID || envs[1].Attempts != 4 {
		t.Errorf("second put of m1: ID %s attempts %d, want the first ID %s and attempts 4", envs[1].ID, envs[1].Attempts, first[1].ID)
	}
	if n, err := rawClient(t).XLen(ctx, "{postbox:"+mb.Name()+"}:dlq").Result(); err != nil || n != 3 {
		t.Errorf("dead-letter stream holds %d entries (%v), want 3: a second put replaces the entry", n, err)
	}
	ages := map[string]time.Duration{"m3": 0, "m1": time.Second, "m2": 2 * time.Second}
	for _, e := range envs {
		if e.ID != redis.DeadLetterID(e.MessageID) || e.LastError() != "boom" || e.Source.Offset == 0 || e.Source.Backend != redis.Backend ||
			e.Reason != "attempts exhausted" || !e.DeadLetteredAt.Equal(t0.Add(ages[e.MessageID])) {
			t.Errorf("envelope did not round-trip: %+v", e)
		}
	}

	got, err := store.Get(ctx, envs[0].ID)
	if err != nil || got.MessageID != "m3" || string(got.Payload) != "payload of m3" || got.Headers["trace"] != "m3" {
		t.Errorf("get %s: %+v, %v", envs[0].ID, got, err)
	}
	if _, err := store.Get(ctx, "nope"); !errors.Is(err, dlq.ErrNotFound) {
		t.Errorf("get unknown: %v, want ErrNotFound", err)
	}

	// An unknown ID fails the whole redrive.
	if _, err := store.Redrive(ctx, envs[0].ID, "nope"); !errors.Is(err, dlq.ErrNotFound) {
		t.Errorf("redrive with an unknown ID: %v, want ErrNotFound", err)
	}
	if n := len(list()); n != 3 {
		t.Fatalf("after a failed redrive %d dead letters, want all 3", n)
	}

	// Redrive m3 and m2 (given newest offset first): they come back in
	// source offset order, under new IDs, pointing at the originals.
	n, err := store.Redrive(ctx, envs[0].ID, envs[2].ID)
	if err != nil || n != 2 {
		t.Fatalf("redrive: %d, %v; want 2, nil", n, err)
	}
	msgs := consume(t, mb, 2, nil)
	for i, want := range []string{"m2", "m3"} {
		m := msgs[i]
		if m.ID != dlq.RedriveID(want) || m.Headers[dlq.HeaderRedriveOf] != want ||
			m.Headers["trace"] != want || string(m.Payload) != "payload of "+want || m.Address.String() != "counter/7" {
			t.Errorf("redriven message %d: %+v, want the copy of %s", i, m, want)
		}
	}
	if rest := list(); len(rest) != 1 || rest[0].MessageID != "m1" {
		t.Fatalf("after redrive: %v, want only m1 left", rest)
	}

	// Purge by ID, then everything.
	if err := store.Put(ctx, env("m4", 40, 3*time.Second)); err != nil {
		t.Fatal(err)
	}
	if n, err := store.Purge(ctx, list()[0].ID, "nope"); err != nil || n != 1 {
		t.Errorf("purge one: %d, %v; want 1, nil", n, err)
	}
	if n, err := store.Purge(ctx); err != nil || n != 1 {
		t.Errorf("purge all: %d, %v; want 1, nil", n, err)
	}
	if rest := list(); len(rest) != 0 {
		t.Errorf("after purge: %v, want none", rest)
	}
	if n, err := store.Redrive(ctx); err != nil || n != 0 {
		t.Errorf("redrive of an empty queue: %d, %v; want 0, nil", n, err)
	}

	if err := store.Put(ctx, dlq.Envelope{Address: "counter/7"}); err == nil {
		t.Errorf("put without MessageID accepted")
	}
}

// Redrive keeps each actor's order across many dead letters on many
// shards, and a redriven copy dead-lettered again redrives as id.r2.
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
		if err := store.Put(ctx, envelopeOf(got[i])); err != nil {
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
	if err := store.Put(ctx, envelopeOf(back[0])); err != nil {
		t.Fatal(err)
	}
	if n, err := store.Redrive(ctx); err != nil || n != 1 {
		t.Fatalf("redrive again: %d, %v", n, err)
	}
	if again := consume(t, mb, 1, nil); again[0].ID != back[0].ID[:len(back[0].ID)-1]+"2" {
		t.Errorf("second redrive gave ID %s, want %s.r2", again[0].ID, back[0].ID[:len(back[0].ID)-3])
	}
}
