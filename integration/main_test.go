// Package integration runs the real worker and producer binaries against
// real stores: black-box CLI checks and crash tests that SIGKILL workers
// under load.
package integration

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/postbox-dev/postbox/actorhost"
	"github.com/postbox-dev/postbox/actors/counter"
	"github.com/postbox-dev/postbox/actors/tally"
	"github.com/postbox-dev/postbox/channel"
	"github.com/postbox-dev/postbox/internal/workload"
	"github.com/postbox-dev/postbox/journal"
)

var workerBin, producerBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "postbox-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	workerBin = filepath.Join(dir, "worker")
	producerBin = filepath.Join(dir, "producer")
	for bin, pkg := range map[string]string{workerBin: "../cmd/worker", producerBin: "../cmd/producer"} {
		out, err := exec.Command("go", "build", "-o", bin, pkg).CombinedOutput()
		if err != nil {
			fmt.Fprintf(os.Stderr, "building %s: %v\n%s", pkg, err, out)
			os.Exit(1)
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// result is a finished command.
type result struct {
	code           int
	stdout, stderr string
}

// run runs a binary to completion (bounded), with stdin.
func run(t *testing.T, stdin string, bin string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Stdin = strings.NewReader(stdin)
	cmd.Dir = t.TempDir() // the default mailbox, postbox.db, lands there
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	cmd.Env = cleanEnv()
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("%s %v: %v", bin, args, err)
	}
	return result{code: code, stdout: out.String(), stderr: errb.String()}
}

// cleanEnv drops POSTBOX_* variables so the tests see only their flags.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "POSTBOX_") {
			env = append(env, kv)
		}
	}
	return env
}

// actorRegistry knows the built-in actors, as the worker binary does,
// without a counter sink: replays run no side effect anyway. A tally's state
// has the counter's shape (both are contracts), so the tests read either
// as a counter.State.
func actorRegistry(t *testing.T) *actorhost.Registry {
	t.Helper()
	reg := actorhost.NewRegistry()
	if err := counter.Register(reg, nil); err != nil {
		t.Fatal(err)
	}
	if err := tally.Register(reg); err != nil {
		t.Fatal(err)
	}
	return reg
}

// checkStateCLI checks up to n of want's actors, in address order, through
// `worker state`: the binary must know their type, and print exactly
// {"value": …, "applied": …}.
func checkStateCLI(t *testing.T, journalURL string, want map[string]counter.State, n int) {
	t.Helper()
	for _, addr := range sortedKeys(want)[:min(n, len(want))] {
		r := run(t, "", workerBin, "state", addr, "--journal", journalURL)
		got, err := parseState(r.stdout)
		if r.code != 0 || err != nil || got != want[addr] {
			t.Errorf("worker state %s: status %d, %s%s (%v); want %+v", addr, r.code, r.stdout, r.stderr, err, want[addr])
		}
	}
}

// parseState reads what `worker state` prints for a counter or a tally:
// exactly {"value": …, "applied": …}.
func parseState(stdout string) (counter.State, error) {
	var fields map[string]json.RawMessage
	var got counter.State
	err := json.Unmarshal([]byte(stdout), &fields)
	if err == nil {
		err = json.Unmarshal([]byte(stdout), &got)
	}
	if err == nil && (len(fields) != 2 || fields["value"] == nil || fields["applied"] == nil) {
		err = fmt.Errorf("want exactly the fields value and applied")
	}
	return got, err
}

// stateDiff is how far actors' states, replayed from a journal, are from
// what a workload must leave behind.
type stateDiff struct {
	wrong int // actors whose value or applied count differs
	// over counts the actors that applied more messages than they were
	// sent: a message applied twice, which no amount of waiting undoes.
	over      int
	addr, why string // one wrong actor (an over-applied one if any), and what is wrong
}

func (d stateDiff) String() string {
	return fmt.Sprintf("%d actors wrong, %d of them with messages applied twice; e.g. %s = %s", d.wrong, d.over, d.addr, d.why)
}

// diffStates replays every actor of want from j, in this process.
func diffStates(ctx context.Context, reg *actorhost.Registry, j journal.Journal, want map[string]counter.State) stateDiff {
	var d stateDiff
	for _, addr := range sortedKeys(want) {
		a, err := channel.ParseAddress(addr)
		var got counter.State
		if err == nil {
			var r actorhost.Replayed
			r, err = reg.Replay(ctx, j, a, actorhost.ReplayOptions{})
			if err == nil {
				err = json.Unmarshal(r.State, &got)
			}
		}
		if err == nil && got == want[addr] {
			continue
		}
		d.wrong++
		over := err == nil && got.Applied > want[addr].Applied
		if over {
			d.over++
		}
		if d.addr == "" || (over && d.over == 1) {
			d.addr, d.why = addr, fmt.Sprintf("%+v (err %v), want %+v", got, err, want[addr])
		}
	}
	return d
}

// journalTail describes the last n entries of actor's journal and its
// newest checkpoint, for failure messages.
func journalTail(ctx context.Context, j journal.Journal, actor string, n int) string {
	var lines []string
	outcomes := map[string][]int64{} // message ID -> seqs of its outcome entries
	err := j.Read(ctx, actor, 1, func(e journal.Entry) error {
		lines = append(lines, fmt.Sprintf("  seq %d %s %s", e.Seq, e.Kind, e.MsgID))
		if e.Kind.IsOutcome() {
			outcomes[e.MsgID] = append(outcomes[e.MsgID], e.Seq)
		}
		return nil
	})
	var twice []string
	for _, id := range sortedKeys(outcomes) {
		if len(outcomes[id]) > 1 {
			twice = append(twice, fmt.Sprintf("%s at seqs %v", id, outcomes[id]))
		}
	}
	cp, ok, cpErr := j.LoadCheckpoint(ctx, actor, journal.MaxSeq)
	return fmt.Sprintf("journal of %s (read err %v; newest checkpoint at seq %d, found %v, err %v; messages with more than one outcome: %v), last %d entries:\n%s",
		actor, err, cp.Seq, ok, cpErr, twice, min(n, len(lines)), strings.Join(lines[max(0, len(lines)-n):], "\n"))
}

// loadArgs are the `producer load` flags that publish spec at rate
// messages per second (0: as fast as possible).
func loadArgs(spec workload.Spec, rate int) []string {
	return []string{"--type", cmp.Or(spec.Type, counter.Type),
		"--actors", strconv.Itoa(spec.Actors), "--count", strconv.Itoa(spec.Count),
		"--seed", strconv.FormatUint(spec.Seed, 10), "--rate", strconv.Itoa(rate),
		"--poison-every", strconv.Itoa(spec.PoisonEvery), "--fail-every", strconv.Itoa(spec.FailEvery),
		"--duplicate-every", strconv.Itoa(spec.DuplicateEvery), "--quiet"}
}
