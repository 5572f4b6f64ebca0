package journal_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/postbox-dev/postbox/journal"
)

func TestIsPermanent(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{fmt.Errorf("x: %w", journal.ErrInvalid), true},
		{fmt.Errorf("x: %w", journal.ErrDuplicateOutcome), true},
		{fmt.Errorf("x: %w", journal.ErrSequence), true},
		{&journal.FencedError{Partitions: []string{"p0"}}, true},
		{journal.ErrClosed, false},
		{errors.New("connection reset"), false},
		{nil, false},
	} {
		if got := journal.IsPermanent(tc.err); got != tc.want {
			t.Errorf("IsPermanent(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}

func TestValidate(t *testing.T) {
	ok := journal.Entry{Actor: "counter/1", Seq: 1, Kind: journal.KindComplete, MsgID: "m"}
	for _, tc := range []struct {
		name string
		b    journal.Batch
		want error
	}{
		{"good", journal.Batch{Partition: "kafka:orders/3", Entries: []journal.Entry{ok, {Actor: "$unaddressed:p/1", Seq: 1, Kind: journal.KindAttempt, MsgID: "horizon"}}}, nil},
		{"empty message ID", journal.Batch{Partition: "kafka:orders/3", Entries: []journal.Entry{{Actor: "counter/1", Seq: 1, Kind: journal.KindComplete}}}, journal.ErrInvalid},
		{"unknown kind", journal.Batch{Partition: "kafka:orders/3", Entries: []journal.Entry{{Actor: "counter/1", Seq: 1, Kind: 7, MsgID: "m"}}}, journal.ErrInvalid},
		{"seq 0", journal.Batch{Partition: "kafka:orders/3", Entries: []journal.Entry{{Actor: "counter/1", Seq: 0, Kind: journal.KindAttempt, MsgID: "m"}}}, journal.ErrSequence},
		{"checkpoint actor", journal.Batch{Partition: "kafka:orders/3", Entries: []journal.Entry{ok}, Checkpoints: []journal.Checkpoint{{Actor: "counter", Seq: 1}}}, journal.ErrInvalid},
		{"negative checkpoint", journal.Batch{Partition: "p", Checkpoints: []journal.Checkpoint{{Actor: "counter/1", Seq: -1}}}, journal.ErrSequence},
		{"seq past 2^53", journal.Batch{Partition: "p", Entries: []journal.Entry{{Actor: "counter/1", Seq: journal.MaxEntrySeq + 1, Kind: journal.KindAttempt, MsgID: "m"}}}, journal.ErrInvalid},
		{"empty partition", journal.Batch{Entries: []journal.Entry{ok}}, journal.ErrInvalid},
		{"partition with NUL", journal.Batch{Partition: "p\x00", Entries: []journal.Entry{ok}}, journal.ErrInvalid},
		{"partition not UTF-8", journal.Batch{Partition: "p\xff"}, journal.ErrInvalid},
	} {
		err := journal.Validate(tc.b)
		if tc.want == nil && err != nil || tc.want != nil && !errors.Is(err, tc.want) {
			t.Errorf("%s: Validate = %v, want %v", tc.name, err, tc.want)
		}
	}
}

func TestBeginAppendChecksInOrder(t *testing.T) {
	bad := journal.Batch{Partition: "p", Entries: []journal.Entry{{Actor: "counter/1", Seq: 0, Kind: journal.KindAttempt, MsgID: "m"}}}
	good := journal.Batch{Partition: "p", Entries: []journal.Entry{{Actor: "counter/1", Seq: 1, Kind: journal.KindAttempt, MsgID: "m"}}}
	done, cancel := context.WithCancel(context.Background())
	cancel()
	for _, tc := range []struct {
		name    string
		ctx     context.Context
		closed  bool
		batches []journal.Batch
		write   bool
		want    error
	}{
		{"invalid before closed", done, true, []journal.Batch{bad}, false, journal.ErrSequence},
		{"closed before the context", done, true, []journal.Batch{good}, false, journal.ErrClosed},
		{"context", done, false, []journal.Batch{good}, false, context.Canceled},
		{"nothing to write", context.Background(), false, nil, false, nil},
		{"write", context.Background(), false, []journal.Batch{good}, true, nil},
	} {
		write, err := journal.BeginAppend(tc.ctx, tc.closed, tc.batches)
		if write != tc.write || tc.want == nil && err != nil || tc.want != nil && !errors.Is(err, tc.want) {
			t.Errorf("%s: BeginAppend = %v, %v; want %v, %v", tc.name, write, err, tc.write, tc.want)
		}
	}
}

func TestValidateEpochMove(t *testing.T) {
	for _, tc := range []struct {
		old, next int64
		ok        bool
	}{
		{0, 1, true},
		{7, 9, true},
		{0, journal.MaxEntrySeq, true},
		{7, 7, false},
		{7, 3, false},
		{-1, 1, false},
		{0, journal.MaxEntrySeq + 1, false},
	} {
		if err := journal.ValidateEpochMove("p", tc.old, tc.next); (err == nil) != tc.ok {
			t.Errorf("ValidateEpochMove(p, %d, %d) = %v, want ok %v", tc.old, tc.next, err, tc.ok)
		}
	}
}

func TestBeginEpochMoveChecksInOrder(t *testing.T) {
	if err := journal.BeginEpochMove(true, "p", 3, 1); !errors.Is(err, journal.ErrClosed) {
		t.Errorf("closed, moving back: %v, want ErrClosed", err)
	}
	if err := journal.BeginEpochMove(false, "p", 3, 1); err == nil {
		t.Error("moving back: no error")
	}
	if err := journal.BeginEpochMove(false, "p", 0, 1); err != nil {
		t.Errorf("0 to 1: %v", err)
	}
}

// Fence keeps the current batches in order, names each stale partition
// once, and leaves the caller's slice as it was.
func TestFence(t *testing.T) {
	epochs := map[string]int64{"a": 1, "b": 2}
	epoch := func(p string) (int64, error) { return epochs[p], nil }
	bs := []journal.Batch{{Partition: "a", Epoch: 1}, {Partition: "b", Epoch: 1}, {Partition: "a", Epoch: 1}, {Partition: "b", Epoch: 0}, {Partition: "c"}}
	orig := slices.Clone(bs)
	current, fenced, err := journal.Fence(bs, epoch)
	if err != nil {
		t.Fatal(err)
	}
	if want := []journal.Batch{bs[0], bs[2], bs[4]}; !slices.EqualFunc(current, want, sameBatch) {
		t.Errorf("current = %+v, want %+v", current, want)
	}
	if !slices.Equal(fenced, []string{"b"}) {
		t.Errorf("fenced = %q, want [b]", fenced)
	}
	if !slices.EqualFunc(bs, orig, sameBatch) {
		t.Errorf("the caller's batches changed: %+v, were %+v", bs, orig)
	}
	if current, fenced, _ := journal.Fence(bs[:1], epoch); len(current) != 1 || fenced != nil {
		t.Errorf("all current: %+v, %q", current, fenced)
	}
	broken := errors.New("broken")
	if _, _, err := journal.Fence(bs, func(string) (int64, error) { return 0, broken }); err != broken {
		t.Errorf("epoch failing: %v, want its error", err)
	}
}

func sameBatch(a, b journal.Batch) bool { return a.Partition == b.Partition && a.Epoch == b.Epoch }

// Validate runs on every Append; a host's group commit passes it about a
// thousand entries at a time.
func BenchmarkValidate(b *testing.B) {
	batch := journal.Batch{Partition: "p0"}
	for i := range 1000 {
		batch.Entries = append(batch.Entries, journal.Entry{Actor: fmt.Sprintf("counter/%d", i), Seq: 7,
			Kind: journal.KindComplete, MsgID: fmt.Sprintf("kafka:orders/3/%d", 1000000+i)})
	}
	b.ReportAllocs()
	for b.Loop() {
		if err := journal.Validate(batch); err != nil {
			b.Fatal(err)
		}
	}
}
