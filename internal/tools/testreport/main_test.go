package main

import (
	"bytes"
	"regexp"
	"strings"
	"testing"
)

// Events as go test -json writes them for one package with a passing, a
// failing and two skipped tests.
const stream = `{"Action":"run","Package":"p","Test":"TestOK"}
{"Action":"output","Package":"p","Test":"TestOK","Output":"=== RUN   TestOK\n"}
{"Action":"pass","Package":"p","Test":"TestOK","Elapsed":0.1}
{"Action":"run","Package":"p","Test":"TestBad"}
{"Action":"output","Package":"p","Test":"TestBad","Output":"    bad_test.go:9: want 2, got 3\n"}
{"Action":"output","Package":"p","Test":"TestBad","Output":"    bad_test.go:12: --- worker logs:\n"}
{"Action":"output","Package":"p","Test":"TestBad","Output":"        a worker's own line\n"}
{"Action":"output","Package":"p","Test":"TestBad","Output":"--- FAIL: TestBad (0.00s)\n"}
{"Action":"fail","Package":"p","Test":"TestBad","Elapsed":0}
{"Action":"run","Package":"p","Test":"TestSub"}
{"Action":"output","Package":"p","Test":"TestSub/sqlite","Output":"    sub_test.go:40: 3 counters are wrong\n"}
{"Action":"output","Package":"p","Test":"TestSub/sqlite","Output":"    sub_test.go:41: --- worker-1 logs:\n"}
{"Action":"output","Package":"p","Test":"TestSub/sqlite","Output":"        {\"level\":\"info\"}\n"}
{"Action":"output","Package":"p","Test":"TestSub/sqlite","Output":"    --- FAIL: TestSub/sqlite (1.00s)\n"}
{"Action":"fail","Package":"p","Test":"TestSub/sqlite","Elapsed":1}
{"Action":"output","Package":"p","Test":"TestSub","Output":"--- FAIL: TestSub (1.00s)\n"}
{"Action":"fail","Package":"p","Test":"TestSub","Elapsed":1}
{"Action":"output","Package":"p","Test":"TestRedis","Output":"    redis_test.go:20: REDIS_ADDR is not set\n"}
{"Action":"output","Package":"p","Test":"TestRedis","Output":"--- SKIP: TestRedis (0.00s)\n"}
{"Action":"skip","Package":"p","Test":"TestRedis","Elapsed":0}
{"Action":"output","Package":"p","Test":"TestRedis2","Output":"    other_test.go:31: REDIS_ADDR is not set\n"}
{"Action":"skip","Package":"p","Test":"TestRedis2","Elapsed":0}
{"Action":"output","Package":"p","Output":"FAIL\n"}
{"Action":"fail","Package":"p","Elapsed":0.5}
{"Action":"pass","Package":"q","Elapsed":1.25}
{"ImportPath":"b","Action":"build-output","Output":"./b.go:1:2: undefined: x\n"}
`

func TestReportSaysWhatFailedAndWhySkipped(t *testing.T) {
	var out bytes.Buffer
	r := newReport(&out)
	if err := r.read(strings.NewReader(stream)); err != nil {
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
	if err := r.read(strings.NewReader(stream)); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "=== RUN   TestOK") {
		t.Errorf("-show did not print the passing test's output:\n%s", out.String())
	}
}
