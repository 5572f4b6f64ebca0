package sqlite

import (
	"encoding/json"
	"maps"
	"testing"
)

func TestHeadersRoundTrip(t *testing.T) {
	for _, h := range []map[string]string{
		{"a": "1"},
		{"trace": "abc", "kind": "even", "": ""},
		{"quote": `say "hi"`, "slash": `a\b`, "ctl": "x\ny", "html": "<&>", "utf8": "héllo ✓"},
		{"colon:key": "v,with,commas", "brace}": "{x}"},
		{"bad-utf8": "\xff\xfe"},
	} {
		b, err := encodeHeaders(h)
		if err != nil {
			t.Fatal(err)
		}
		var std map[string]string
		if err := json.Unmarshal(b, &std); err != nil {
			t.Errorf("encoded %v as invalid JSON %s: %v", h, b, err)
		}
		got, err := decodeHeaders(b)
		if err != nil || !maps.Equal(got, std) {
			t.Errorf("decode(%s) = %v, %v; want %v", b, got, err, std)
		}
	}
	for _, bad := range []string{`{"a":"1",}`, `{"a"}`, `{"a":1}`, `["a"]`} {
		if h, ok := decodeHeadersFast([]byte(bad)); ok {
			t.Errorf("fast path accepted %s as %v", bad, h)
		}
	}
	if h, err := decodeHeaders([]byte(`{ "a" : "1" }`)); err != nil || h["a"] != "1" {
		t.Errorf("spaced JSON: %v, %v", h, err)
	}
}
