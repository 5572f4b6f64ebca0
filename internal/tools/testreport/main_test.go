package main

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// stream returns testdata/stream.jsonl: events as go test -json writes
// them for one package with a passing, a failing and two skipped tests.
func stream(t *testing.T) io.Reader {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "stream.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	return bytes.NewReader(b)
}

func TestReportSaysWhatFailedAndWhySkipped(t *testing.T) {
	var out bytes.Buffer
	r := newReport(&out)
	if err := r.read(stream(t)); err != nil {
		t.Fatal(err)
	}
	r.summary()
	got := out.String()
	for _, want := range []string{
		"bad_test.go:9: want 2, got 3",
		"FAIL\tp\t0.500s",
		"ok  \tq\t1.250s",
		"1 tests passed, 2 failed, 2 skipped",
		"failed: p.TestBad\n    bad_test.go:9: want 2, got 3\n",
		"failed: p.TestSub\n    sqlite:\n    sub_test.go:40: 3 counters are wrong\n",
		"skipped 2: REDIS_ADDR is not set",
		"./b.go:1:2: undefined: x",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("report lacks %q:\n%s", want, got)
		}
	}
	if _, summary, _ := strings.Cut(got, "tests passed"); strings.Contains(summary, "worker") {
		t.Errorf("the summary repeats a dump of logs:\n%s", summary)
	}
	if strings.Contains(got, "=== RUN   TestOK") {
		t.Errorf("report prints a passing test's output:\n%s", got)
	}
	if !r.bad || r.skips != 2 {
		t.Errorf("bad %v, skips %d", r.bad, r.skips)
	}
}

func TestShowPrintsWhatAPassingTestChecked(t *testing.T) {
	var out bytes.Buffer
	r := newReport(&out)
	r.show = regexp.MustCompile("^TestOK$")
	if err := r.read(stream(t)); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "=== RUN   TestOK") {
		t.Errorf("-show did not print the passing test's output:\n%s", out.String())
	}
}
