package ident

import (
	"strings"
	"testing"
)

func TestCheckActorKey(t *testing.T) {
	for _, tc := range []struct {
		key string
		ok  bool
	}{
		{"counter/1", true},
		{"$horizon:mailbox/3", true},
		{"$horizon:kafka:orders/12", true},
		{"$", true},
		{"$" + strings.Repeat("h", MaxLen-1), true},
		{"$" + strings.Repeat("h", MaxLen), false},
		{"$horizon:\x00", false},
		{"$\xff", false},
		{"counter", false},  // neither an address nor a "$" key
		{"/1", false},       // empty type
		{"counter/", false}, // empty id
		{"", false},
		{"counter/\x00", false},
	} {
		if err := CheckActorKey(tc.key); (err == nil) != tc.ok {
			t.Errorf("CheckActorKey(%q) = %v, want ok %v", tc.key, err, tc.ok)
		}
	}
}

func TestErrorsQuoteLongValuesShort(t *testing.T) {
	err := CheckMessageID(strings.Repeat("é", 1000))
	if err == nil {
		t.Fatal("a 2000-byte ID passed")
	}
	msg := err.Error()
	if len(msg) > 250 || !strings.Contains(msg, `…`) || strings.Contains(msg, `\x`) {
		t.Fatalf("error %q: want a short quote, cut between characters", msg)
	}
}

// The checks run on every journal entry: they must not allocate when all
// is well.
func TestChecksDoNotAllocate(t *testing.T) {
	n := testing.AllocsPerRun(100, func() {
		_ = CheckActorKey("counter/42")
		_ = CheckActorKey("$horizon:mailbox/3")
		_ = CheckAddress("counter", "42")
		_ = CheckMessageID("kafka:orders/3/12345")
	})
	if n != 0 {
		t.Fatalf("%v allocations per run of valid identifiers, want 0", n)
	}
}
