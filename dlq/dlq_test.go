package dlq

import "testing"

func TestRedriveIDCountsUp(t *testing.T) {
	for in, want := range map[string]string{
		"m1":       "m1.r1",
		"m1.r1":    "m1.r2",
		"m1.r9":    "m1.r10",
		"a.rb":     "a.rb.r1",
		"x/3/17.r": "x/3/17.r.r1",
	} {
		if got := RedriveID(in); got != want {
			t.Errorf("RedriveID(%q) = %q, want %q", in, got, want)
		}
	}
}
