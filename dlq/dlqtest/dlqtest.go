// Package dlqtest is the conformance suite of the dead-letter contract
// (dlq.Store). Every backend with a dead-letter queue runs it from its own
// tests:
//
//	func TestDLQConformance(t *testing.T) {
//		dlqtest.Run(t, func(t *testing.T) dlqtest.Harness {
//			// create a fresh mailbox with an empty dead-letter queue for t
//			// and return its store and a way to read what is redriven
//		})
//	}
//
// Backend-specific behaviour (how IDs are derived, what the storage looks
// like, what happens after Close) stays in the backend's own tests.
package dlqtest

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/postbox-dev/postbox/channel"
	"github.com/postbox-dev/postbox/dlq"
)

// Harness is what the suite needs of one dead-letter queue under test.
type Harness struct {
	// Store is the queue, empty.
	Store dlq.Store
	// Backend, Mailbox and Partitions describe the mailbox the queue
	// belongs to: the suite builds the Source of its dead letters from them
	// (the home partition of the address), and redrives go to that mailbox.
	Backend    string
	Mailbox    string
	Partitions int
	// Next returns the next n messages the mailbox delivers, in delivery
	// order, failing t if they do not come in time or, as far as the
	// backend can tell, if more than n come: a redrive must publish each
	// dead letter once. The suite reads only what it redrove.
	Next func(t *testing.T, n int) []channel.Message
}

// Run runs the suite. open is called once per test, possibly from parallel
// tests, and must return a new mailbox with an empty queue each time,
// cleaned up when its t ends.
func Run(t *testing.T, open func(t *testing.T) Harness) {
	tests := []struct {
		name string
		fn   func(t *testing.T, h Harness)
	}{
		{"EmptyListsNothing", testEmpty},
		{"PutRoundTripsEveryField", testRoundTrip},
		{"PutNeedsMessageID", testPutNeedsMessageID},
		{"ListOldestFirst", testListOldestFirst},
		{"PutTwiceKeepsOne", testPutTwice},
		{"GetUnknownIsNotFound", testGetUnknown},
		{"RedriveKeepsOrderPerActor", testRedrive},
		{"RedriveUnknownRedrivesNothing", testRedriveUnknown},
		{"Purge", testPurge},
		{"PutKeepsEveryByte", testBytes},
		{"PutTwiceKeepsOneByteExact", testPutTwiceBytes},
		{"RedriveKeepsAddressBytes", testRedriveBytes},
		{"RedriveRefusesMalformedAddress", testRedriveMalformed},
		{"RedriveRefusesBadIdentifiers", testRedriveBadIdentifiers},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tt.fn(t, open(t))
		})
	}
}

// base is the time the suite's dead letters are dead-lettered around; its
// nanoseconds catch a backend that rounds times.
var base = time.Date(2025, 1, 2, 3, 4, 5, 123456789, time.UTC)

// letter is a dead letter of message msgID to addr read from offset,
// dead-lettered at base+age.
func (h Harness) letter(msgID, addr string, offset int64, age time.Duration) dlq.Envelope {
	return dlq.Envelope{
		MessageID: msgID,
		Address:   addr,
		Payload:   []byte(strconv.FormatInt(offset, 10)),
		Headers:   map[string]string{"trace": msgID},
		Source:    h.source(addr, offset),
		Attempts:  1,
		Errors:    []dlq.AttemptError{{Attempt: 1, Error: "boom", At: base.Add(age)}},
		Reason:    "permanent error",
		Worker:    "w1",
		// Age and source order differ on purpose: List follows age, Redrive
		// follows the source.
		DeadLetteredAt: base.Add(age),
	}
}

func (h Harness) source(addr string, offset int64) dlq.Source {
	return dlq.Source{Backend: h.Backend, Mailbox: h.Mailbox,
		Partition: channel.HomePartition(addr, h.Partitions), Offset: offset}
}

func put(t *testing.T, s dlq.Store, envs ...dlq.Envelope) {
	t.Helper()
	for _, e := range envs {
		if err := s.Put(t.Context(), e); err != nil {
			t.Fatalf("Put of %s: %v", e.MessageID, err)
		}
	}
}

func list(t *testing.T, s dlq.Store) []dlq.Envelope {
	t.Helper()
	envs, err := s.List(t.Context())
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	return envs
}

// messageIDs lists the MessageIDs of envs, comma-separated.
func messageIDs(envs []dlq.Envelope) string {
	ids := make([]string, len(envs))
	for i, e := range envs {
		ids[i] = e.MessageID
	}
	return strings.Join(ids, ",")
}

// idOf returns the dead-letter ID of message msgID, failing t if it is not
// queued.
func idOf(t *testing.T, envs []dlq.Envelope, msgID string) string {
	t.Helper()
	for _, e := range envs {
		if e.MessageID == msgID {
			return e.ID
		}
	}
	t.Fatalf("no dead letter of %+q in %+q", msgID, messageIDs(envs))
	return ""
}

// diff describes how got differs from want, ignoring the ID, or returns "".
// Times compare with Equal, and a nil payload or header map equals an
// empty one: backends need not keep either distinction.
func diff(got, want dlq.Envelope) string {
	var d []string
	add := func(field string, g, w any) { d = append(d, fmt.Sprintf("%s %v, want %v", field, g, w)) }
	if got.MessageID != want.MessageID {
		add("MessageID", got.MessageID, want.MessageID)
	}
	if got.Address != want.Address {
		add("Address", got.Address, want.Address)
	}
	if !bytes.Equal(got.Payload, want.Payload) {
		add("Payload", fmt.Sprintf("%q", got.Payload), fmt.Sprintf("%q", want.Payload))
	}
	if len(got.Headers) != len(want.Headers) || !maps.Equal(got.Headers, want.Headers) {
		add("Headers", got.Headers, want.Headers)
	}
	gs, ws := got.Source, want.Source
	if gs.Backend != ws.Backend || gs.Mailbox != ws.Mailbox || gs.Partition != ws.Partition ||
		gs.Offset != ws.Offset || !gs.Published.Equal(ws.Published) {
		add("Source", gs, ws)
	}
	if got.Attempts != want.Attempts {
		add("Attempts", got.Attempts, want.Attempts)
	}
	errsEqual := len(got.Errors) == len(want.Errors)
	for i := 0; errsEqual && i < len(got.Errors); i++ {
		g, w := got.Errors[i], want.Errors[i]
		errsEqual = g.Attempt == w.Attempt && g.Error == w.Error && g.At.Equal(w.At)
	}
	if !errsEqual {
		add("Errors", got.Errors, want.Errors)
	}
	if got.Reason != want.Reason {
		add("Reason", got.Reason, want.Reason)
	}
	if got.Worker != want.Worker {
		add("Worker", got.Worker, want.Worker)
	}
	if !got.DeadLetteredAt.Equal(want.DeadLetteredAt) {
		add("DeadLetteredAt", got.DeadLetteredAt, want.DeadLetteredAt)
	}
	return strings.Join(d, "; ")
}

func testEmpty(t *testing.T, h Harness) {
	if envs := list(t, h.Store); len(envs) != 0 {
		t.Fatalf("List of a new queue = %s, want none", messageIDs(envs))
	}
}

// Full is a dead letter of message m1 to counter/1 with every field set,
// src as its source, for a backend's own tests of how it stores one: it is
// dead-lettered at 2025-01-02T03:04:05.123456789Z after three attempts,
// the second of whose errors has spaces and a second line.
func Full(payload []byte, src dlq.Source) dlq.Envelope {
	return dlq.Envelope{
		MessageID: "m1", Address: "counter/1", Payload: payload,
		// An empty value and a key that looks like a backend's own prefix
		// must survive too.
		Headers:  map[string]string{"trace": "abc", "orig-x": "y", "empty": ""},
		Source:   src,
		Attempts: 3,
		Errors: []dlq.AttemptError{
			{Attempt: 1, Error: "boom", At: base.Add(-3 * time.Second)},
			{Attempt: 2, Error: "boom again: with spaces\nand a second line", At: base.Add(-2 * time.Second)},
			{Attempt: 3, Error: "last", At: base.Add(-time.Second)},
		},
		Reason: "attempts exhausted", Worker: "worker-1", DeadLetteredAt: base,
	}
}

func testRoundTrip(t *testing.T, h Harness) {
	full := Full([]byte("p1\x00\xff"), dlq.Source{Backend: h.Backend, Mailbox: h.Mailbox,
		Partition: channel.HomePartition("counter/1", h.Partitions), Offset: 41, Published: base.Add(-time.Minute)})
	// The least a dead letter can carry: no payload, headers or errors.
	bare := dlq.Envelope{MessageID: "m2", Address: "counter/2", Source: h.source("counter/2", 7),
		Attempts: 1, Reason: "permanent error", DeadLetteredAt: base.Add(-time.Hour)}
	put(t, h.Store, full, bare)

	envs := list(t, h.Store)
	if got := messageIDs(envs); got != "m2,m1" {
		t.Fatalf("List = %s, want m2,m1 (oldest first)", got)
	}
	for i, want := range []dlq.Envelope{bare, full} {
		if envs[i].ID == "" {
			t.Errorf("dead letter of %s has no ID", want.MessageID)
		}
		if d := diff(envs[i], want); d != "" {
			t.Errorf("List: dead letter of %s did not round-trip: %s", want.MessageID, d)
		}
		got, err := h.Store.Get(t.Context(), envs[i].ID)
		if err != nil {
			t.Fatalf("Get(%s) of %s: %v", envs[i].ID, want.MessageID, err)
		}
		if got.ID != envs[i].ID {
			t.Errorf("Get(%s) returned ID %s", envs[i].ID, got.ID)
		}
		if d := diff(got, want); d != "" {
			t.Errorf("Get: dead letter of %s did not round-trip: %s", want.MessageID, d)
		}
	}
	if envs[0].LastError() != "" || envs[1].LastError() != "last" {
		t.Errorf("LastError = %q and %q, want none and %q", envs[0].LastError(), envs[1].LastError(), "last")
	}
}

func testPutNeedsMessageID(t *testing.T, h Harness) {
	// Without it the dead letter could not be redriven nor deduplicated.
	if err := h.Store.Put(t.Context(), dlq.Envelope{Address: "counter/7"}); err == nil {
		t.Errorf("Put without a MessageID accepted")
	}
	if envs := list(t, h.Store); len(envs) != 0 {
		t.Errorf("after a rejected Put the queue holds %s", messageIDs(envs))
	}
}

func testListOldestFirst(t *testing.T, h Harness) {
	// Put order, age order and source order all differ, so that only
	// ordering by DeadLetteredAt gives m3,m1,m2.
	put(t, h.Store,
		h.letter("m2", "counter/7", 20, 2*time.Second),
		h.letter("m3", "counter/7", 30, 0),
		h.letter("m1", "counter/7", 10, time.Second),
	)
	if got := messageIDs(list(t, h.Store)); got != "m3,m1,m2" {
		t.Fatalf("List = %s, want oldest first m3,m1,m2", got)
	}
}

func testPutTwice(t *testing.T, h Harness) {
	put(t, h.Store, h.letter("m1", "counter/7", 10, 0), h.letter("m2", "counter/7", 20, time.Second))
	first := idOf(t, list(t, h.Store), "m1")

	// m1 fails again after a redrive, an hour later: the queue keeps one
	// dead letter of it, under the same ID, with what is new.
	again := h.letter("m1", "counter/7", 10, time.Hour)
	again.Attempts, again.Reason, again.Worker = 4, "attempts exhausted", "w2"
	again.Errors = append(again.Errors, dlq.AttemptError{Attempt: 4, Error: "boom 4", At: base.Add(time.Hour)})
	put(t, h.Store, again)

	envs := list(t, h.Store)
	if got := messageIDs(envs); got != "m2,m1" {
		t.Fatalf("List after a second Put of m1 = %s, want m2,m1 (one m1, now the newest)", got)
	}
	if envs[1].ID != first {
		t.Errorf("second Put of m1 changed its ID from %s to %s", first, envs[1].ID)
	}
	if d := diff(envs[1], again); d != "" {
		t.Errorf("second Put of m1 did not replace the fields: %s", d)
	}
	if got, err := h.Store.Get(t.Context(), first); err != nil || got.Attempts != 4 {
		t.Errorf("Get(%s) after the second Put = attempts %d, %v; want 4, nil", first, got.Attempts, err)
	}
}

func testGetUnknown(t *testing.T, h Harness) {
	put(t, h.Store, h.letter("m1", "counter/7", 10, 0))
	for _, id := range []string{"nope", "dl-nope", ""} {
		if _, err := h.Store.Get(t.Context(), id); !errors.Is(err, dlq.ErrNotFound) {
			t.Errorf("Get(%q) = %v, want an error matching dlq.ErrNotFound", id, err)
		}
	}
}

func testRedriveUnknown(t *testing.T, h Harness) {
	put(t, h.Store, h.letter("a1", "counter/1", 1, 0), h.letter("b2", "counter/2", 2, time.Second))
	envs := list(t, h.Store)
	// One unknown ID fails the whole call: nothing may be redriven.
	n, err := h.Store.Redrive(t.Context(), envs[0].ID, "dl-unknown", envs[1].ID)
	if !errors.Is(err, dlq.ErrNotFound) || n != 0 {
		t.Fatalf("Redrive with an unknown ID = %d, %v; want 0 and an error matching dlq.ErrNotFound", n, err)
	}
	if got := messageIDs(list(t, h.Store)); got != "a1,b2" {
		t.Fatalf("after a failed Redrive the queue holds %s, want a1,b2", got)
	}
}

func testRedrive(t *testing.T, h Harness) {
	// counter/1's dead letters are aged against their source order, and
	// a5.r1 is itself a redriven copy of a5.
	envs := []dlq.Envelope{
		h.letter("a7", "counter/1", 7, 0),
		h.letter("a3", "counter/1", 3, time.Second),
		h.letter("b4", "counter/2", 4, 2*time.Second),
		h.letter("a5.r1", "counter/1", 5, 3*time.Second),
		h.letter("c1", "counter/3", 1, 4*time.Second),
	}
	envs[3].Headers[dlq.HeaderRedriveOf] = "a5"
	put(t, h.Store, envs...)
	queued := list(t, h.Store)
	id := func(msgIDs ...string) []string {
		var out []string
		for _, m := range msgIDs {
			out = append(out, idOf(t, queued, m))
		}
		return out
	}

	// IDs given out of order, one twice: redriven once each, in source order.
	n, err := h.Store.Redrive(t.Context(), id("a7", "a3", "b4", "a5.r1", "a7")...)
	if err != nil || n != 4 {
		t.Fatalf("Redrive = %d, %v; want 4, nil", n, err)
	}
	if got := messageIDs(list(t, h.Store)); got != "c1" {
		t.Fatalf("after Redrive the queue holds %s, want c1", got)
	}
	want := map[string][]string{ // address → redriven IDs in source order
		"counter/1": {"a3.r1", "a5.r2", "a7.r1"},
		"counter/2": {"b4.r1"},
	}
	redriveOf := map[string]string{"a3.r1": "a3", "a5.r2": "a5.r1", "a7.r1": "a7", "b4.r1": "b4"}
	payload := map[string]string{"a3.r1": "3", "a5.r2": "5", "a7.r1": "7", "b4.r1": "4"}
	for _, m := range h.Next(t, 4) {
		addr := m.Address.String()
		if len(want[addr]) == 0 || m.ID != want[addr][0] {
			t.Fatalf("redriven %s to %s, want next %v there", m.ID, addr, want[addr])
		}
		want[addr] = want[addr][1:]
		orig := redriveOf[m.ID]
		// The copy keeps the original's headers, so tracing survives.
		if m.Headers[dlq.HeaderRedriveOf] != orig || m.Headers["trace"] != orig || string(m.Payload) != payload[m.ID] {
			t.Errorf("redriven %s: payload %q, headers %v; want payload %q, headers %s=%s and trace=%s",
				m.ID, m.Payload, m.Headers, payload[m.ID], dlq.HeaderRedriveOf, orig, orig)
		}
		// Every backend keys by the home partition, redrives included.
		if home := channel.HomePartition(addr, h.Partitions); m.Partition != home {
			t.Errorf("redriven %s to partition %d, want its home partition %d", m.ID, m.Partition, home)
		}
	}

	// No IDs redrives everything left; nothing more was published before it.
	if n, err := h.Store.Redrive(t.Context()); err != nil || n != 1 {
		t.Fatalf("Redrive() = %d, %v; want 1, nil", n, err)
	}
	if m := h.Next(t, 1)[0]; m.ID != "c1.r1" || m.Headers[dlq.HeaderRedriveOf] != "c1" {
		t.Fatalf("redriven %s (headers %v), want c1.r1", m.ID, m.Headers)
	}
	if envs := list(t, h.Store); len(envs) != 0 {
		t.Fatalf("after redriving all the queue holds %s", messageIDs(envs))
	}
	if n, err := h.Store.Redrive(t.Context()); err != nil || n != 0 {
		t.Errorf("Redrive() of an empty queue = %d, %v; want 0, nil", n, err)
	}
}

func testPurge(t *testing.T, h Harness) {
	put(t, h.Store,
		h.letter("m1", "counter/1", 1, 0),
		h.letter("m2", "counter/2", 2, time.Second),
		h.letter("m3", "counter/3", 3, 2*time.Second),
	)
	// An unknown ID is skipped, not an error: it may be purged already.
	if n, err := h.Store.Purge(t.Context(), idOf(t, list(t, h.Store), "m2"), "dl-unknown"); err != nil || n != 1 {
		t.Fatalf("Purge(m2, unknown) = %d, %v; want 1, nil", n, err)
	}
	if got := messageIDs(list(t, h.Store)); got != "m1,m3" {
		t.Fatalf("after Purge the queue holds %s, want m1,m3", got)
	}
	if n, err := h.Store.Purge(t.Context()); err != nil || n != 2 {
		t.Fatalf("Purge() = %d, %v; want 2, nil", n, err)
	}
	if envs := list(t, h.Store); len(envs) != 0 {
		t.Fatalf("after purging all the queue holds %s", messageIDs(envs))
	}
}

// exact describes how the bytes of got differ from want, or returns "": the
// strings, payload and headers compare with reflect.DeepEqual and print
// quoted, so that a replaced byte shows. The rest is left to diff.
func exact(got, want dlq.Envelope) string {
	var d []string
	for _, f := range []struct {
		name      string
		got, want any
	}{
		{"MessageID", got.MessageID, want.MessageID},
		{"Address", got.Address, want.Address},
		{"Payload", got.Payload, want.Payload},
		{"Headers", got.Headers, want.Headers},
		{"Reason", got.Reason, want.Reason},
		{"Worker", got.Worker, want.Worker},
		{"Source.Backend", got.Source.Backend, want.Source.Backend},
		{"Source.Mailbox", got.Source.Mailbox, want.Source.Mailbox},
		{"Errors", errorTexts(got.Errors), errorTexts(want.Errors)},
	} {
		if !reflect.DeepEqual(f.got, f.want) {
			d = append(d, fmt.Sprintf("%s %+q, want %+q", f.name, f.got, f.want))
		}
	}
	if rest := diff(got, want); rest != "" {
		d = append(d, rest)
	}
	return strings.Join(d, "; ")
}

func errorTexts(errs []dlq.AttemptError) []string {
	out := make([]string, len(errs))
	for i, e := range errs {
		out[i] = strconv.Itoa(e.Attempt) + " " + e.Error
	}
	return out
}

// oddLetter is a dead letter whose strings, payload and headers hold
// bytes that are not UTF-8: invalid bytes, lone continuation bytes, an
// overlong encoding, an encoded surrogate, NUL. Such bytes come from any
// producer that does not validate (kcat, a raw client), and JSON would
// replace each with U+FFFD, so that redrive would publish to another actor.
func (h Harness) oddLetter(msgID, addr string, age time.Duration) dlq.Envelope {
	return dlq.Envelope{
		MessageID: msgID,
		Address:   addr,
		Payload:   []byte("\xff\xfe\x00\x80 " + msgID),
		Headers: map[string]string{
			"trace":       msgID,
			"k\xff\xfe":   "v\x80\xbf",
			"nul\x00key":  "nul\x00value",
			"\xc0\xaf":    "\xed\xa0\x80",
			"empty\xfe":   "",
			"plain":       "\xff",
			"orig-\x80":   "looks like a backend's own prefix",
			"\x00":        "\x00",
			"utf8-ключ-🔑": "значение-🔑",
		},
		Source:   h.source(addr, 9),
		Attempts: 2,
		Errors: []dlq.AttemptError{
			{Attempt: 1, Error: "boom \xff\xfe", At: base.Add(age - time.Second)},
			{Attempt: 2, Error: "\x00 lone \x80 continuation\nsecond line \xc3", At: base.Add(age)},
		},
		Reason:         "permanent error \xff",
		Worker:         "w\x00\xfe",
		DeadLetteredAt: base.Add(age),
	}
}

func testBytes(t *testing.T, h Harness) {
	// Message IDs that JSON would make equal ("m\xff" and "m\xfe" both
	// become "m\uFFFD"), and two that differ only after a NUL, which a C
	// string would cut.
	want := []dlq.Envelope{
		h.oddLetter("m\xff", "counter/\xff\xfe", 0),
		h.oddLetter("m\xfe", "counter/\x80\x00", time.Second),
		h.oddLetter("n\x00a", "\xc3\x28/\xed\xa0\x80", 2*time.Second),
		h.oddLetter("n\x00b", "nokey\xff", 3*time.Second),
	}
	put(t, h.Store, want...)
	envs := list(t, h.Store)
	if len(envs) != len(want) {
		t.Fatalf("List = %d dead letters %+q, want %d: distinct bytes are distinct messages", len(envs), messageIDs(envs), len(want))
	}
	for i, w := range want {
		if d := exact(envs[i], w); d != "" {
			t.Errorf("List[%d]: dead letter of %+q did not keep its bytes: %s", i, w.MessageID, d)
		}
		got, err := h.Store.Get(t.Context(), envs[i].ID)
		if err != nil {
			t.Fatalf("Get(%s) of %+q: %v", envs[i].ID, w.MessageID, err)
		}
		if d := exact(got, w); d != "" {
			t.Errorf("Get(%s): dead letter of %+q did not keep its bytes: %s", envs[i].ID, w.MessageID, d)
		}
	}
}

func testPutTwiceBytes(t *testing.T, h Harness) {
	first := h.oddLetter("m\xff\x00", "counter/\xff", 0)
	other := h.oddLetter("m\xfe\x00", "counter/\xfe", time.Second) // the same ID to JSON
	put(t, h.Store, first, other)
	firstID := idOf(t, list(t, h.Store), first.MessageID)

	// The same message dead-lettered again, with other bytes everywhere
	// but its ID: one dead letter, same ID, the new bytes.
	again := h.oddLetter(first.MessageID, "counter/\xfe\xff", time.Hour)
	again.Payload = []byte("\x00again\xff")
	again.Headers = map[string]string{"k\xff\xfe": "other \x80", "new\xfe": "\x00"}
	again.Reason, again.Worker = "attempts exhausted \xfe", "w2\xff"
	again.Attempts = 5
	again.Errors = append(again.Errors, dlq.AttemptError{Attempt: 5, Error: "boom \xc3", At: base.Add(time.Hour)})
	put(t, h.Store, again)

	envs := list(t, h.Store)
	if got, want := messageIDs(envs), other.MessageID+","+again.MessageID; got != want {
		t.Fatalf("List after a second Put = %+q, want %+q (one of each, the replaced one newest)", got, want)
	}
	if envs[1].ID != firstID {
		t.Errorf("second Put of %+q changed its ID from %s to %s", again.MessageID, firstID, envs[1].ID)
	}
	if d := exact(envs[0], other); d != "" {
		t.Errorf("second Put of %+q changed the dead letter of %+q: %s", again.MessageID, other.MessageID, d)
	}
	if d := exact(envs[1], again); d != "" {
		t.Errorf("List: second Put of %+q did not replace the bytes: %s", again.MessageID, d)
	}
	got, err := h.Store.Get(t.Context(), firstID)
	if err != nil {
		t.Fatalf("Get(%s): %v", firstID, err)
	}
	if d := exact(got, again); d != "" {
		t.Errorf("Get(%s): second Put of %+q did not replace the bytes: %s", firstID, again.MessageID, d)
	}
}

func testRedriveBytes(t *testing.T, h Harness) {
	// Valid addresses, but each a trap for code that trims, splits at the
	// last '/', normalises or truncates: the copy must go to the very
	// bytes the dead letter holds.
	long := "counter/" + strings.Repeat("x", channel.MaxIdentifierLen-len("counter/")) // the longest allowed
	addrs := []string{"zähler/ä b/c", "counter/ 7 ", "Counter/7", "counter/7/", "🔑/%2F?#", long}
	var envs []dlq.Envelope
	for i, addr := range addrs {
		e := h.letter("m"+strconv.Itoa(i), addr, int64(i), time.Duration(i)*time.Second)
		e.Payload = []byte("\xff\x00\xfe" + strconv.Itoa(i))
		envs = append(envs, e)
	}
	put(t, h.Store, envs...)
	if n, err := h.Store.Redrive(t.Context()); err != nil || n != len(envs) {
		t.Fatalf("Redrive() = %d, %v; want %d, nil", n, err, len(envs))
	}
	byID := make(map[string]dlq.Envelope, len(envs))
	for _, e := range envs {
		byID[dlq.RedriveID(e.MessageID)] = e
	}
	for _, m := range h.Next(t, len(envs)) {
		e, ok := byID[m.ID]
		if !ok {
			t.Errorf("redriven an unexpected message %+q to %+q", m.ID, m.Address.String())
			continue
		}
		delete(byID, m.ID)
		typ, _, _ := strings.Cut(e.Address, "/")
		if m.Address.String() != e.Address || m.Address.Type != typ {
			t.Errorf("redriven %s to %+q (type %+q), want exactly %+q", m.ID, m.Address.String(), m.Address.Type, e.Address)
		}
		if !bytes.Equal(m.Payload, e.Payload) || m.Headers[dlq.HeaderRedriveOf] != e.MessageID {
			t.Errorf("redriven %s: payload %+q, %s %+q; want %+q, %+q", m.ID, m.Payload, dlq.HeaderRedriveOf,
				m.Headers[dlq.HeaderRedriveOf], e.Payload, e.MessageID)
		}
		if home := channel.HomePartition(e.Address, h.Partitions); m.Partition != home {
			t.Errorf("redriven %s to partition %d, want the home partition %d of %+q", m.ID, m.Partition, home, e.Address)
		}
	}
	if len(byID) > 0 {
		t.Errorf("not redriven: %v", slices.Sorted(maps.Keys(byID)))
	}
}

// refused checks that Redrive(ids...) refused the dead letter id without
// redriving anything, with an error that names it and says what to do,
// and that each of ids is still queued byte-exactly. It returns the error.
func refused(t *testing.T, h Harness, id string, queued map[string]dlq.Envelope, ids ...string) error {
	t.Helper()
	n, err := h.Store.Redrive(t.Context(), ids...)
	if err == nil || n != 0 {
		t.Fatalf("Redrive of dead letter %s (address %+q) = %d, %v; want 0 and an error", id, queued[id].Address, n, err)
	}
	if !strings.Contains(err.Error(), id) || !strings.Contains(err.Error(), "purge") {
		t.Errorf("Redrive of dead letter %s: error %q does not name it and say to purge it (or republish it by hand)", id, err)
	}
	for _, k := range ids {
		got, err := h.Store.Get(t.Context(), k)
		if err != nil {
			t.Fatalf("after a refused Redrive, Get(%s) = %v; want it still queued", k, err)
		}
		if d := exact(got, queued[k]); d != "" {
			t.Errorf("after a refused Redrive, dead letter %s changed: %s", k, d)
		}
	}
	return err
}

// queuedByID puts envs and returns them by dead-letter ID, and the IDs in
// the order of envs.
func queuedByID(t *testing.T, h Harness, envs ...dlq.Envelope) (map[string]dlq.Envelope, []string) {
	t.Helper()
	put(t, h.Store, envs...)
	got := list(t, h.Store)
	queued := make(map[string]dlq.Envelope, len(envs))
	ids := make([]string, len(envs))
	for i, e := range envs {
		ids[i] = idOf(t, got, e.MessageID)
		queued[ids[i]] = e
	}
	return queued, ids
}

func testRedriveMalformed(t *testing.T, h Harness) {
	// Not "type/id": a record keyed by kcat, say. There is nowhere right to
	// publish them, so Redrive must refuse, not guess.
	good := h.letter("good", "counter/1", 1, 0)
	envs := []dlq.Envelope{good}
	for i, addr := range []string{"nokey", "/7", "counter/", "", "\xff\xfe"} {
		e := h.oddLetter("bad"+strconv.Itoa(i), addr, time.Duration(i+1)*time.Second)
		e.Source = h.source("counter/1", int64(i+2))
		envs = append(envs, e)
	}
	queued, ids := queuedByID(t, h, envs...)
	for _, id := range ids[1:] {
		if err := refused(t, h, id, queued, id); !errors.Is(err, channel.ErrBadAddress) {
			t.Errorf("Redrive of %s (address %+q): %v; want an error matching channel.ErrBadAddress", id, queued[id].Address, err)
		}
		// With a good one in the same call: nothing is redriven.
		refused(t, h, id, queued, ids[0], id)
	}
	// All of them: refused too, naming a bad one (which one first depends
	// on the backend's redrive order).
	if n, err := h.Store.Redrive(t.Context()); err == nil || n != 0 ||
		!slices.ContainsFunc(ids[1:], func(id string) bool { return strings.Contains(err.Error(), id) }) {
		t.Fatalf("Redrive() of good and malformed dead letters = %d, %v; want 0 and an error naming a malformed one", n, err)
	}
	if n, err := h.Store.Redrive(t.Context(), ids[0]); err != nil || n != 1 {
		t.Fatalf("Redrive of the good one = %d, %v; want 1, nil", n, err)
	}
	// Nothing of the refused calls was published before it.
	if m := h.Next(t, 1)[0]; m.ID != dlq.RedriveID(good.MessageID) || m.Address.String() != good.Address {
		t.Errorf("after refused redrives the mailbox delivered %+q to %+q, want only %s to %s",
			m.ID, m.Address.String(), dlq.RedriveID(good.MessageID), good.Address)
	}
	if got := list(t, h.Store); len(got) != len(envs)-1 {
		t.Errorf("the queue holds %d dead letters, want the %d refused ones", len(got), len(envs)-1)
	}
}

func testRedriveBadIdentifiers(t *testing.T, h Harness) {
	// A "type/id" that breaks the identifier limits (valid UTF-8, no
	// control characters, at most channel.MaxIdentifierLen bytes), or a
	// message ID whose redriven copy does. Every publisher refuses them;
	// Redrive must say which dead letter and leave it queued.
	over := strings.Repeat("x", channel.MaxIdentifierLen+1-len("counter/"))
	good := h.letter("good", "counter/1", 1, 0)
	envs := []dlq.Envelope{
		good,
		h.letter("a-invalid", "counter/\xff\xfe", 2, time.Second),
		h.letter("a-lone", "\x80/7", 3, 2*time.Second),
		h.letter("a-nul", "counter/a\x00b", 4, 3*time.Second),
		h.letter("a-newline", "counter/a\nb", 5, 4*time.Second),
		h.letter("a-long", "counter/"+over, 6, 5*time.Second),
		h.letter("m\xff\xfe", "counter/1", 7, 6*time.Second),
		h.letter("m\x00", "counter/1", 8, 7*time.Second),
		// Fits, but its copy m….r1 does not.
		h.letter(strings.Repeat("m", channel.MaxIdentifierLen-1), "counter/1", 9, 8*time.Second),
	}
	queued, ids := queuedByID(t, h, envs...)
	for i, id := range ids[1:] {
		err := refused(t, h, id, queued, id)
		if want := channel.ErrBadAddress; i >= 5 {
			want = channel.ErrBadMessageID
			if !errors.Is(err, want) {
				t.Errorf("Redrive of %s (message %+q): %v; want an error matching %v", id, envs[i+1].MessageID, err, want)
			}
		} else if !errors.Is(err, want) {
			t.Errorf("Redrive of %s (address %+q): %v; want an error matching %v", id, envs[i+1].Address, err, want)
		}
		refused(t, h, id, queued, ids[0], id) // with a good one: nothing is redriven
	}
	if n, err := h.Store.Redrive(t.Context(), ids[0]); err != nil || n != 1 {
		t.Fatalf("Redrive of the good one = %d, %v; want 1, nil", n, err)
	}
	if m := h.Next(t, 1)[0]; m.ID != dlq.RedriveID(good.MessageID) || m.Address.String() != good.Address {
		t.Errorf("after refused redrives the mailbox delivered %+q to %+q, want only %s to %s",
			m.ID, m.Address.String(), dlq.RedriveID(good.MessageID), good.Address)
	}
}
