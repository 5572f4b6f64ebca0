package channel

import "testing"

// Vectors from Kafka's UtilsTest.testMurmur2 (Java client).
func TestMurmur2MatchesJavaClient(t *testing.T) {
	cases := map[string]int32{
		"21":                         -973932308,
		"foobar":                     -790332482,
		"a-little-bit-long-string":   -985981536,
		"a-little-bit-longer-string": -1486304829,
		"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
		"abc": 479470107,
	}
	for in, want := range cases {
		if got := murmur2([]byte(in)); got != want {
			t.Errorf("murmur2(%q) = %d, want %d", in, got, want)
		}
	}
}

func TestHomePartitionIsStableAndInRange(t *testing.T) {
	for _, key := range []string{"counter/1", "counter/2", "orders/x", ""} {
		p := HomePartition(key, 12)
		if p < 0 || p >= 12 {
			t.Fatalf("HomePartition(%q) = %d, out of range", key, p)
		}
		if HomePartition(key, 12) != p {
			t.Fatalf("HomePartition(%q) not stable", key)
		}
	}
}

func TestParseAddress(t *testing.T) {
	a, err := ParseAddress("counter/a/b")
	if err != nil || a.Type != "counter" || a.ID != "a/b" || a.String() != "counter/a/b" {
		t.Fatalf("ParseAddress = %+v, %v", a, err)
	}
	for _, bad := range []string{"", "counter", "/1", "counter/"} {
		if _, err := ParseAddress(bad); err == nil {
			t.Errorf("ParseAddress(%q) accepted", bad)
		}
	}
}
