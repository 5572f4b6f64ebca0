package channel

import (
	"errors"
	"strings"
	"testing"
)

// FuzzParseAddress checks ParseAddress against its documented shape: it
// never panics, accepts exactly "type/id" with both parts non-empty and no
// slash in the type, and a parsed address's String parses back to itself.
func FuzzParseAddress(f *testing.F) {
	for _, s := range []string{
		"counter/42", "counter/a/b", "a/", "/b", "/", "", "noslash",
		"counter//", "\x00/\x00", "\xff\xfe/\xc3\x28", "counter/7\n",
	} {
		f.Add(s)
	}

	f.Fuzz(func(t *testing.T, s string) {
		a, err := ParseAddress(s)
		typ, id, ok := strings.Cut(s, "/")
		if want := ok && typ != "" && id != ""; (err == nil) != want {
			t.Fatalf("ParseAddress(%q) error %v, want accepted %v", s, err, want)
		}
		if err != nil {
			if !errors.Is(err, ErrBadAddress) {
				t.Fatalf("ParseAddress(%q): error %v does not match ErrBadAddress", s, err)
			}
			if a != (Address{}) {
				t.Fatalf("ParseAddress(%q) failed but returned %+v", s, a)
			}
			return
		}
		if a.Type != typ || a.ID != id || strings.Contains(a.Type, "/") {
			t.Fatalf("ParseAddress(%q) = %+v", s, a)
		}
		if a.String() != s {
			t.Fatalf("ParseAddress(%q).String() = %q", s, a.String())
		}
		b, err := ParseAddress(a.String())
		if err != nil || b != a {
			t.Fatalf("%+v: String %q parses back as %+v, %v", a, a.String(), b, err)
		}
	})
}
