// Package backendtest holds what the journal backends' own tests share
// beyond the conformance suite (journal/journaltest): a bounded context,
// unique names, entries that name themselves, opening a journal for a
// test, and the history the compaction tests look behind.
package backendtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/postbox-dev/postbox/journal"
)

// Context returns a context that ends when t does, or after a minute: a
// test that hangs fails instead.
func Context(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// UniqueName returns prefix followed by 12 random hex digits: a schema,
// table prefix or namespace no other test uses, in this run or another
// one sharing the server.
func UniqueName(prefix string) string {
	b := make([]byte, 6)
	rand.Read(b)
	return prefix + hex.EncodeToString(b)
}

// Entry returns an entry whose Data is "<actor>#<seq>".
func Entry(actor string, seq int64, kind journal.Kind, msg string) journal.Entry {
	return journal.Entry{Actor: actor, Seq: seq, Kind: kind, MsgID: msg, Data: fmt.Appendf(nil, "%s#%d", actor, seq)}
}

// Open returns what open returns, given at most 30 seconds, failing t on
// an error (which names opts), and closes it when t ends.
func Open[J io.Closer](t testing.TB, opts any, open func(ctx context.Context) (J, error)) J {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	j, err := open(ctx)
	if err != nil {
		t.Fatalf("Open(%+v): %v", opts, err)
	}
	t.Cleanup(func() { j.Close() })
	return j
}

// Compacted appends to j, which keeps one checkpoint and compacts, the
// attempts and completions of four messages of actor a/1 (seqs 1 to 8)
// and an attempt at seq 9, with a checkpoint at 9. Compaction then leaves
// the completions without their data, and the last entry whole.
func Compacted(t testing.TB, ctx context.Context, j journal.Journal) {
	t.Helper()
	var es []journal.Entry
	for i := int64(0); i < 4; i++ {
		es = append(es, Entry("a/1", 2*i+1, journal.KindAttempt, fmt.Sprint("m", i)), Entry("a/1", 2*i+2, journal.KindComplete, fmt.Sprint("m", i)))
	}
	es = append(es, Entry("a/1", 9, journal.KindAttempt, "m4"))
	err := j.Append(ctx, journal.Batch{Partition: "p0", Entries: es, Checkpoints: []journal.Checkpoint{{Actor: "a/1", Seq: 9}}})
	if err != nil {
		t.Fatal(err)
	}
}
