package actorhost

import "testing"

// A span follows the offset spacing seen, and stays bounded when offsets
// carry the time (Redis) and messages are days apart.
func TestHorizonSpanFollowsSpacingWithinBounds(t *testing.T) {
	for _, tc := range []struct {
		name        string
		first, last int64
		seen        int64
		want        int64
	}{
		{"nothing seen", 0, 0, 0, horizonStep},
		{"dense", 10, 19, 10, horizonStep},
		{"every 8th", 0, 80, 11, 8 * horizonStep},
		{"a Redis entry a month apart", 1 << 60, 1<<60 + 30*24*3600*1000<<20, 2, maxSpan},
	} {
		hz := horizon{first: tc.first, last: tc.last, seen: tc.seen}
		if got := hz.span(); got != tc.want {
			t.Errorf("%s: span = %d, want %d", tc.name, got, tc.want)
		}
	}
	far := horizon{first: 0, last: 1 << 62, seen: 2}
	if got := far.ahead(1 << 62); got != 1<<62+maxSpan {
		t.Errorf("ahead = %d, want %d", got, int64(1<<62+maxSpan))
	}
}
