package journaltest

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/postbox-dev/postbox/journal"
)

// Reference writes the entries of batches some plainer way than a journal
// (a bare table, one statement) and returns the time that took: what
// BenchAppend measures a journal against.
type Reference func(batches []journal.Batch) time.Duration

// BenchAppend measures group commit on journals open returns, fresh and
// empty, one for each sub-benchmark: each op is one Append of one entry
// of 200 bytes for each of N actors, spread over up to 16 partitions with
// their epochs acquired, all attempts or half attempts and half
// completions (which also go into the outcome index, as in a host that
// journals an attempt and a completion). It reports
//
//	rows/s      entries the journal wrote per second
//	appends/s   Append calls per second
//	raw_rows/s  the same rows written by the reference, when reference
//	            makes one for the sub-benchmark
//	raw_ratio   rows/s ÷ raw_rows/s: what share of a plain write's rate
//	            the journal keeps after fencing, sequence checks and the
//	            outcome index
//
// The journal and the reference alternate op by op, so that other load on
// the machine slows both alike.
func BenchAppend(b *testing.B, open func(b *testing.B) journal.Journal, reference func(b *testing.B) Reference) {
	attempts := []journal.Kind{journal.KindAttempt}
	both := []journal.Kind{journal.KindAttempt, journal.KindComplete}
	for _, tc := range []struct {
		actors int
		kinds  []journal.Kind
	}{{1000, attempts}, {1000, both}, {10, both}} {
		name := fmt.Sprintf("actors=%d/attempts", tc.actors)
		if len(tc.kinds) > 1 {
			name = fmt.Sprintf("actors=%d/attempt+complete", tc.actors)
		}
		b.Run(name, func(b *testing.B) {
			var ref Reference
			if reference != nil {
				ref = reference(b)
			}
			benchAppend(b, open(b), tc.actors, tc.kinds, ref)
		})
	}
}

func benchAppend(b *testing.B, j journal.Journal, nActors int, kinds []journal.Kind, ref Reference) {
	ctx := context.Background()
	actors := make([]string, nActors)
	for i := range actors {
		actors[i] = fmt.Sprintf("counter/%d", i)
	}
	batches := make([]journal.Batch, min(16, nActors))
	for p := range batches {
		name := fmt.Sprintf("p%d", p)
		e, err := journal.AcquireEpoch(ctx, j, name)
		if err != nil {
			b.Fatal(err)
		}
		batches[p] = journal.Batch{Partition: name, Epoch: e}
	}
	data := make([]byte, 200)

	var journalTime, refTime time.Duration
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		for p := range batches {
			batches[p].Entries = batches[p].Entries[:0]
		}
		seq := int64(i + 1)
		kind := kinds[i%len(kinds)]
		msg := fmt.Sprintf("m%d", i/len(kinds))
		for a, actor := range actors {
			p := &batches[a%len(batches)]
			p.Entries = append(p.Entries, journal.Entry{Actor: actor, Seq: seq, Kind: kind, MsgID: msg, Data: data})
		}
		start := time.Now()
		if err := j.Append(ctx, batches...); err != nil {
			b.Fatal(err)
		}
		journalTime += time.Since(start)

		if ref != nil {
			b.StopTimer()
			refTime += ref(batches)
			b.StartTimer()
		}
	}
	b.StopTimer()

	rows := float64(b.N * nActors)
	rate := rows / journalTime.Seconds()
	b.ReportMetric(rate, "rows/s")
	b.ReportMetric(float64(b.N)/journalTime.Seconds(), "appends/s")
	if ref != nil {
		refRate := rows / refTime.Seconds()
		b.ReportMetric(refRate, "raw_rows/s")
		b.ReportMetric(rate/refRate, "raw_ratio")
	}
}
