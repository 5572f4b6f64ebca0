package pages

import (
	"context"
	"errors"
	"testing"

	"github.com/postbox-dev/postbox/journal"
)

// store holds seqs 1..n and counts fetches.
type store struct{ n, fetches int64 }

func (s *store) fetch(_ context.Context, from int64, page []journal.Entry) ([]journal.Entry, error) {
	s.fetches++
	for seq := from; seq <= s.n && len(page) < Size; seq++ {
		page = append(page, journal.Entry{Seq: seq})
	}
	return page, nil
}

func TestReadPagesThroughEverySeqOnce(t *testing.T) {
	for _, tc := range []struct{ n, from, fetches int64 }{
		{0, 1, 1}, {5, 0, 1}, {Size, 1, 2}, {2*Size + 1, 1, 3}, {2 * Size, Size + 1, 2},
	} {
		s := &store{n: tc.n}
		var got []int64
		last, err := Read(context.Background(), tc.from, func() bool { return false }, s.fetch, func(e journal.Entry) error {
			got = append(got, e.Seq)
			return nil
		})
		first := max(tc.from, 1)
		if err != nil || last != tc.n || int64(len(got)) != tc.n-first+1 || s.fetches != tc.fetches {
			t.Fatalf("%d entries from %d: last %d, %d read, %d fetches, err %v; want last %d, %d fetches", tc.n, tc.from, last, len(got), s.fetches, err, tc.n, tc.fetches)
		}
		for i, seq := range got {
			if seq != first+int64(i) {
				t.Fatalf("%d entries from %d: seq %d at %d", tc.n, tc.from, seq, i)
			}
		}
	}
}

func TestReadStopsAtTheFirstError(t *testing.T) {
	stop := errors.New("stop")
	s := &store{n: 3 * Size}
	var n int
	_, err := Read(context.Background(), 1, func() bool { return false }, s.fetch, func(e journal.Entry) error {
		if n++; e.Seq == Size+2 {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) || n != Size+2 || s.fetches != 2 {
		t.Fatalf("err %v after %d entries and %d fetches; want stop after %d and 2", err, n, s.fetches, Size+2)
	}
	closed := false
	_, err = Read(context.Background(), 1, func() bool { return closed }, s.fetch, func(journal.Entry) error { closed = true; return nil })
	if !errors.Is(err, journal.ErrClosed) {
		t.Fatalf("closed after the first page: err %v, want journal.ErrClosed", err)
	}
}
