// Command testreport reads `go test -json` on standard input and prints
// what plain `go test` prints (a line per package, the output of failed
// tests), then how many tests ran, failed and skipped, and why they
// skipped. scripts/test.sh runs every test through it, so that a run that
// skipped the service tests says so at the end instead of passing quietly.
//
//	go test -json ./... | go run ./internal/tools/testreport -skips skipped.txt
//
// The summary repeats, under each failed test, the last lines the test
// itself wrote (file_test.go:N: …), its failed subtests' lines first,
// leaving out dumps of other programs' logs (lines whose message starts
// with "--- "): the reason stays in view at the end of a long run.
//
// It exits 1 if a test or a package failed. With -skips, it writes the
// number of skipped tests to that file. With -show, the output of the tests
// whose names match it is printed even when they pass: what they checked.
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// event is one line of test2json output.
type event struct {
	Action  string
	Package string
	Test    string
	Elapsed float64
	Output  string
}

type report struct {
	out     io.Writer
	show    *regexp.Regexp      // tests whose output is printed when they pass
	output  map[string][]string // by package and test: lines not yet printed
	passed  int
	failed  []string
	said    map[string][]string // by failed test: its last own lines
	skipped map[string]int      // by reason
	skips   int
	bad     bool // a package failed
}

func newReport(out io.Writer) *report {
	return &report{out: out, output: map[string][]string{}, skipped: map[string]int{}, said: map[string][]string{}}
}

func main() {
	skipsFile := flag.String("skips", "", "write the number of skipped tests to this file")
	show := flag.String("show", "", "print the output of the tests matching this regular expression when they pass too")
	flag.Parse()
	r := newReport(os.Stdout)
	if *show != "" {
		re, err := regexp.Compile(*show)
		if err != nil {
			fmt.Fprintln(os.Stderr, "testreport: -show:", err)
			os.Exit(2)
		}
		r.show = re
	}
	if err := r.read(os.Stdin); err != nil {
		fmt.Fprintln(os.Stderr, "testreport:", err)
		os.Exit(2)
	}
	r.summary()
	if *skipsFile != "" {
		if err := os.WriteFile(*skipsFile, []byte(strconv.Itoa(r.skips)+"\n"), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "testreport:", err)
			os.Exit(2)
		}
	}
	if r.bad || len(r.failed) > 0 {
		os.Exit(1)
	}
}

func (r *report) read(in io.Reader) error {
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 0, 64*1024), 16<<20)
	for sc.Scan() {
		var e event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil || e.Action == "" {
			// Not test2json (a build error printed as is): pass it on.
			fmt.Fprintln(r.out, sc.Text())
			continue
		}
		r.event(e)
	}
	return sc.Err()
}

func (r *report) event(e event) {
	key := e.Package + " " + e.Test
	switch e.Action {
	case "build-output":
		// A compile error, reported before the package's "fail".
		fmt.Fprint(r.out, e.Output)
	case "output":
		r.output[key] = append(r.output[key], e.Output)
	case "pass":
		if e.Test == "" {
			fmt.Fprintf(r.out, "ok  \t%s\t%.3fs\n", e.Package, e.Elapsed)
		} else if !strings.Contains(e.Test, "/") {
			r.passed++
		}
		if e.Test != "" && r.show != nil && r.show.MatchString(e.Test) {
			fmt.Fprint(r.out, strings.Join(r.output[key], ""))
		}
		delete(r.output, key)
	case "skip":
		if e.Test != "" && !strings.Contains(e.Test, "/") {
			r.skips++
			r.skipped[skipReason(r.output[key])]++
		}
		delete(r.output, key)
	case "fail":
		if e.Test == "" {
			// The package's own lines: a panic, a build failure, "FAIL".
			r.bad = true
			fmt.Fprint(r.out, strings.Join(r.output[key], ""))
			fmt.Fprintf(r.out, "FAIL\t%s\t%.3fs\n", e.Package, e.Elapsed)
		} else {
			// A subtest's lines go under its top-level test, which fails
			// after it: the reason is usually in the subtest.
			top, sub, isSub := strings.Cut(e.Test, "/")
			name := e.Package + "." + top
			if own := ownLines(r.output[key], 8); isSub && len(own) > 0 {
				r.said[name] = append(r.said[name], sub+":")
				r.said[name] = append(r.said[name], own...)
			} else if !isSub {
				r.failed = append(r.failed, name)
				r.said[name] = append(r.said[name], own...)
			}
			fmt.Fprint(r.out, strings.Join(r.output[key], ""))
		}
		delete(r.output, key)
	}
}

var location = regexp.MustCompile(`^\s*\S+_test\.go:\d+: `)

// ownLines returns the last n lines of a test's output that the test
// wrote itself, trimmed, except those that start a dump ("--- ...").
func ownLines(lines []string, n int) []string {
	var own []string
	for _, l := range lines {
		loc := location.FindString(l)
		if loc == "" || strings.HasPrefix(l[len(loc):], "--- ") {
			continue
		}
		own = append(own, strings.TrimSpace(l))
	}
	return own[max(0, len(own)-n):]
}

// skipReason is what a skipped test said last before "--- SKIP".
func skipReason(lines []string) string {
	for i := len(lines) - 1; i >= 0; i-- {
		l := strings.TrimSpace(lines[i])
		if l == "" || strings.HasPrefix(l, "--- SKIP") || strings.HasPrefix(l, "=== ") {
			continue
		}
		return strings.TrimSpace(location.ReplaceAllString(lines[i], ""))
	}
	return "(no reason given)"
}

func (r *report) summary() {
	fmt.Fprintf(r.out, "\n%d tests passed, %d failed, %d skipped\n", r.passed, len(r.failed), r.skips)
	for _, f := range r.failed {
		fmt.Fprintf(r.out, "  failed: %s\n", f)
		for _, l := range r.said[f] {
			fmt.Fprintf(r.out, "    %s\n", l)
		}
	}
	reasons := make([]string, 0, len(r.skipped))
	for why := range r.skipped {
		reasons = append(reasons, why)
	}
	sort.Slice(reasons, func(i, j int) bool {
		if r.skipped[reasons[i]] != r.skipped[reasons[j]] {
			return r.skipped[reasons[i]] > r.skipped[reasons[j]]
		}
		return reasons[i] < reasons[j]
	})
	for _, why := range reasons {
		fmt.Fprintf(r.out, "  skipped %d: %s\n", r.skipped[why], why)
	}
}
