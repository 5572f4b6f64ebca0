package main

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"

	"github.com/postbox-dev/postbox/internal/cli"
)

// An address or message ID that breaks the identifier limits is a usage
// error: one line on stderr, exit status 2, nothing published.
func TestSendRefusesBadIdentifiers(t *testing.T) {
	mailbox := "--mailbox=sqlite:" + filepath.Join(t.TempDir(), "m.db")
	long := strings.Repeat("m", 1025)
	for _, tc := range []struct {
		name  string
		args  []string
		stdin string
		want  string
	}{
		{"address not UTF-8", []string{"send", "counter/\xff", `{}`, mailbox}, "", `address "counter/\xff" is not valid UTF-8`},
		{"address with NUL", []string{"send", "counter/1\x00", `{}`, mailbox}, "", "control character U+0000"},
		{"address too long", []string{"send", "counter/" + long, `{}`, mailbox}, "", "is 1033 bytes; the limit is 1024"},
		{"--id too long", []string{"send", "counter/1", `{}`, "--id", long, mailbox}, "", "is 1025 bytes; the limit is 1024"},
		{"--id with newline", []string{"send", "counter/1", `{}`, "--id", "a\nb", mailbox}, "", "control character U+000A"},
		{"NDJSON id with NUL", []string{"send", mailbox},
			`{"actor":"counter/1","data":1}` + "\n" + `{"actor":"counter/2","id":"m\u0000","data":1}`, "stdin line 2: \"id\""},
		{"NDJSON actor too long", []string{"send", mailbox}, `{"actor":"counter/` + long + `","data":1}`, "stdin line 1: \"actor\""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(tc.args, strings.NewReader(tc.stdin), &stdout, &stderr)
			if code != cli.ExitUsage {
				t.Fatalf("exit status %d, want %d; stderr %q", code, cli.ExitUsage, stderr.String())
			}
			msg := stderr.String()
			if !strings.Contains(msg, tc.want) {
				t.Fatalf("stderr %q does not say %q", msg, tc.want)
			}
			if strings.Count(msg, "\n") != 1 || !strings.HasSuffix(msg, "\n") {
				t.Fatalf("stderr %q is not one line", msg)
			}
			if stdout.Len() > 0 {
				t.Fatalf("stdout %q, want nothing published", stdout.String())
			}
		})
	}
}
