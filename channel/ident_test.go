package channel_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/postbox-dev/postbox/channel"
)

func TestCheckMessageID(t *testing.T) {
	const max = channel.MaxIdentifierLen
	for _, tc := range []struct {
		name, id string
		ok       bool
		wantText string // a part of the error
	}{
		{"short", "m-1", true, ""},
		{"one byte", "m", true, ""},
		{"exactly the limit", strings.Repeat("m", max), true, ""},
		{"one past the limit", strings.Repeat("m", max+1), false, "is 1025 bytes; the limit is 1024"},
		{"far past the limit", strings.Repeat("m", 70000), false, "is 70000 bytes; the limit is 1024"},
		// "é" is 2 bytes: 511 of them and "m" make 1023, one more "é" 1025.
		{"multi-byte up to the limit", "m" + strings.Repeat("é", 511) + "x", true, ""},
		{"multi-byte straddling the limit", "m" + strings.Repeat("é", 512), false, "is 1025 bytes"},
		{"4-byte characters", strings.Repeat("😀", max/4), true, ""},
		{"slashes and punctuation", "topic/3/1234 {x}:y", true, ""},
		{"empty", "", false, "empty"},
		{"NUL", "m\x00", false, "control character U+0000 at byte 1"},
		{"newline", "a\nb", false, "control character U+000A"},
		{"DEL", "a\x7f", false, "U+007F"},
		{"C1 control", "a\u0085", false, "U+0085"},
		{"after C1", "a\u00a0", true, ""},
		{"invalid UTF-8", "m\xff", false, `"m\xff" is not valid UTF-8 (byte 1)`},
		{"truncated UTF-8", "m\xc3", false, "not valid UTF-8"},
		{"U+FFFD itself", "m\uFFFD", true, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := channel.CheckMessageID(tc.id)
			if tc.ok {
				if err != nil {
					t.Fatalf("CheckMessageID(%d bytes): %v, want nil", len(tc.id), err)
				}
				return
			}
			if !errors.Is(err, channel.ErrBadMessageID) {
				t.Fatalf("CheckMessageID(%d bytes) = %v, want ErrBadMessageID", len(tc.id), err)
			}
			if errors.Is(err, channel.ErrBadAddress) {
				t.Fatalf("CheckMessageID error %v matches ErrBadAddress too", err)
			}
			saysInOneLine(t, err, tc.wantText)
		})
	}
}

func TestCheckAddress(t *testing.T) {
	const max = channel.MaxIdentifierLen
	addr := func(typ, id string) channel.Address { return channel.Address{Type: typ, ID: id} }
	for _, tc := range []struct {
		name     string
		a        channel.Address
		ok       bool
		wantText string
	}{
		{"plain", addr("counter", "42"), true, ""},
		{"slash in the id", addr("files", "a/b/c"), true, ""},
		// The limit counts the whole "type/id", slash included.
		{"exactly the limit", addr("t", strings.Repeat("x", max-2)), true, ""},
		{"one past the limit", addr("t", strings.Repeat("x", max-1)), false, "is 1025 bytes; the limit is 1024"},
		{"multi-byte straddling the limit", addr("t", "x"+strings.Repeat("é", 511)), false, "is 1025 bytes"},
		{"multi-byte up to the limit", addr("t", strings.Repeat("é", 511)), true, ""},
		{"empty type", addr("", "1"), false, "empty type"},
		{"empty id", addr("counter", ""), false, "empty id"},
		{"slash in the type", addr("a/b", "1"), false, `contains "/"`},
		{"NUL in the id", addr("counter", "1\x00"), false, "U+0000"},
		{"tab in the type", addr("coun\tter", "1"), false, "U+0009"},
		{"invalid UTF-8", addr("counter", "\xff"), false, `address "counter/\xff" is not valid UTF-8`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := channel.CheckAddress(tc.a)
			if tc.ok {
				if err != nil {
					t.Fatalf("CheckAddress(%d bytes): %v, want nil", len(tc.a.String()), err)
				}
				return
			}
			if !errors.Is(err, channel.ErrBadAddress) {
				t.Fatalf("CheckAddress(%q) = %v, want ErrBadAddress", tc.a.String(), err)
			}
			saysInOneLine(t, err, tc.wantText)
		})
	}
}

func TestCheckPublish(t *testing.T) {
	good := channel.Message{Address: channel.Address{Type: "a", ID: "1"}}
	if err := channel.CheckPublish([]channel.Message{good, {Address: good.Address, ID: "m-1"}}); err != nil {
		t.Errorf("good batch: %v", err)
	}
	err := channel.CheckPublish([]channel.Message{good, {Address: channel.Address{Type: "a"}}})
	if !errors.Is(err, channel.ErrBadAddress) || !strings.Contains(err.Error(), "message 1") {
		t.Errorf("bad address: %v, want ErrBadAddress naming message 1", err)
	}
	err = channel.CheckPublish([]channel.Message{{Address: good.Address, ID: "m\x00"}, good})
	if !errors.Is(err, channel.ErrBadMessageID) || !strings.Contains(err.Error(), "message 0") {
		t.Errorf("bad ID: %v, want ErrBadMessageID naming message 0", err)
	}
}

// saysInOneLine checks that err says want, in one short line.
func saysInOneLine(t *testing.T, err error, want string) {
	t.Helper()
	msg := err.Error()
	if !strings.Contains(msg, want) {
		t.Fatalf("error %q does not say %q", msg, want)
	}
	if strings.ContainsAny(msg, "\n\r") || len(msg) > 300 {
		t.Fatalf("error %q is not one short line", msg)
	}
}

// CheckPublish is the check every Publish makes before it writes anything:
// each address, and each ID that is set (Publish assigns the empty ones).
func ExampleCheckPublish() {
	ok := []channel.Message{
		{Address: channel.Address{Type: "counter", ID: "1"}},
		{ID: "m2", Address: channel.Address{Type: "counter", ID: "2"}},
	}
	fmt.Println(channel.CheckPublish(ok))
	bad := append(ok, channel.Message{Address: channel.Address{Type: "counter"}})
	fmt.Println(errors.Is(channel.CheckPublish(bad), channel.ErrBadAddress))
	// Output:
	// <nil>
	// true
}
