// Package integration runs the real worker and producer binaries against
// real stores: black-box CLI checks and crash tests that SIGKILL workers
// under load.
package integration

// The one harness of the tests: the binaries they build and start (workers,
// producers), the stores they open, and what a workload must leave behind.

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/postbox-dev/postbox/actorhost"
	"github.com/postbox-dev/postbox/actors/counter"
	"github.com/postbox-dev/postbox/actors/tally"
	"github.com/postbox-dev/postbox/backend"
	"github.com/postbox-dev/postbox/channel"
	"github.com/postbox-dev/postbox/dlq"
	"github.com/postbox-dev/postbox/internal/testenv"
	"github.com/postbox-dev/postbox/internal/waitfor"
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

// process is a worker or producer started in the background. Its stdout
// and stderr go to dir/name.log. The test kills it, if it still runs, when
// it ends.
type process struct {
	name, logPath string
	cmd           *exec.Cmd
	started       time.Time
	done          chan struct{}
	err           error  // once done is closed
	admin         string // a worker's --admin address

	mu         sync.Mutex
	lastClaims []actorhost.PartitionClaim // its last answer to GET /partitions
}

func startProcess(t *testing.T, dir, name, bin string, args ...string) *process {
	t.Helper()
	logPath := filepath.Join(dir, name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = cleanEnv()
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		f.Close()
		t.Fatalf("start %s: %v", name, err)
	}
	p := &process{name: name, logPath: logPath, cmd: cmd, started: time.Now(), done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	t.Cleanup(func() {
		if !p.exited() {
			cmd.Process.Signal(syscall.SIGKILL) // stopped (SIGSTOP) processes die too
			<-p.done
		}
		if t.Failed() {
			t.Logf("--- %s (pid %d), last lines of %s:\n%s", name, p.pid(), logPath, p.tail(15))
		}
	})
	return p
}

func (p *process) pid() int { return p.cmd.Process.Pid }

func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

func (p *process) signal(t *testing.T, sig syscall.Signal) {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("%s (pid %d): signal %v: %v", p.name, p.pid(), sig, err)
	}
}

// kill SIGKILLs the process and waits for it.
func (p *process) kill(t *testing.T) {
	t.Helper()
	p.signal(t, syscall.SIGKILL)
	<-p.done
}

// stop sends SIGTERM and waits up to timeout for a clean exit.
func (p *process) stop(t *testing.T, timeout time.Duration) {
	t.Helper()
	stopAll(t, timeout, p)
}

// exit waits up to timeout for the process to end and fails the test if it
// does not, or ends with an error.
func (p *process) exit(t *testing.T, timeout time.Duration) {
	t.Helper()
	if !p.wait(timeout) {
		t.Fatalf("%s (pid %d) still running after %s:\n%s", p.name, p.pid(), timeout, p.tail(12))
	}
	if p.err != nil {
		t.Fatalf("%s (pid %d) failed: %v\n%s", p.name, p.pid(), p.err, p.tail(12))
	}
}

// wait waits up to timeout for the process to exit.
func (p *process) wait(timeout time.Duration) bool {
	select {
	case <-p.done:
		return true
	case <-time.After(timeout):
		return false
	}
}

func (p *process) output() string {
	b, _ := os.ReadFile(p.logPath)
	return string(b)
}

func (p *process) tail(n int) string { return lastLines(strings.TrimRight(p.output(), "\n"), n) }

// logEntry is one JSON log line of a worker.
type logEntry struct {
	Level string `json:"level"`
	Msg   string `json:"msg"`
	// Partition is a number in the consumer's lines, a journal partition
	// key ("kafka:topic/3") in the fence line.
	Partition json.RawMessage `json:"partition"`
	Epoch     int64           `json:"epoch"`
	Error     string          `json:"error"`

	// The fields of "worker stopped".
	Processed    int64 `json:"processed"`
	DeadLettered int64 `json:"dead_lettered"`
	Deduplicated int64 `json:"deduplicated"`
	Executed     int64 `json:"effects_executed"`
}

// logEntries returns the JSON lines of the process's log (the host's and
// franz-go's, through one zap logger); other lines are skipped.
func (p *process) logEntries() []logEntry {
	f, err := os.Open(p.logPath)
	if err != nil {
		return nil
	}
	defer f.Close()
	return parseLogEntries(f)
}

// parseLogEntries reads the JSON lines of a worker's log.
func parseLogEntries(r io.Reader) []logEntry {
	var out []logEntry
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64*1024), 4<<20)
	for sc.Scan() {
		var e logEntry
		if json.Unmarshal(sc.Bytes(), &e) == nil && e.Msg != "" {
			out = append(out, e)
		}
	}
	return out
}

// count returns how many log lines have a message that starts with msg.
func (p *process) count(msg string) int {
	n := 0
	for _, e := range p.logEntries() {
		if strings.HasPrefix(e.Msg, msg) {
			n++
		}
	}
	return n
}

// owned returns the partitions a worker holds, as its GET /partitions
// lists them.
func (p *process) owned() map[int32]bool {
	own := map[int32]bool{}
	for _, c := range p.claims() {
		own[c.Partition] = true
	}
	return own
}

// claimEpochs returns the journal epoch of each partition a worker holds,
// as its GET /partitions lists them.
func (p *process) claimEpochs() map[int32]int64 {
	epochs := map[int32]int64{}
	for _, c := range p.claims() {
		epochs[c.Partition] = c.Epoch
	}
	return epochs
}

// adminClient gives up soon: a stopped (SIGSTOP) worker accepts
// connections but never answers.
var adminClient = &http.Client{Timeout: time.Second}

// claims asks a worker's admin endpoint which partitions it holds. A
// worker that cannot answer (killed, or stopped with SIGSTOP) is taken to
// hold what it last said: its partitions move only once the others take
// them.
func (p *process) claims() []actorhost.PartitionClaim {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.exited() {
		return p.lastClaims
	}
	resp, err := adminClient.Get("http://" + p.admin + "/partitions")
	if err != nil {
		return p.lastClaims
	}
	defer resp.Body.Close()
	var cs []actorhost.PartitionClaim
	if resp.StatusCode == http.StatusOK && json.NewDecoder(resp.Body).Decode(&cs) == nil {
		p.lastClaims = cs
	}
	return p.lastClaims
}

// stats returns the counters a worker logs when it stops.
func (p *process) stats() (logEntry, bool) {
	for _, e := range p.logEntries() {
		if e.Msg == "worker stopped" {
			return e, true
		}
	}
	return logEntry{}, false
}

// waitRunning waits for a worker's "worker running" line: its topics exist
// and its host has started.
func (p *process) waitRunning(t *testing.T, timeout time.Duration) {
	t.Helper()
	waitfor.Until(t, timeout, p.name+" running", func() bool {
		if p.exited() {
			t.Fatalf("%s exited: %v\n%s", p.name, p.err, p.tail(10))
		}
		return p.count("worker running") > 0
	})
}

// stopAll sends SIGTERM to every process at once, then waits up to timeout
// for each to exit, cleanly.
func stopAll(t *testing.T, timeout time.Duration, ps ...*process) {
	t.Helper()
	start := time.Now()
	for _, p := range ps {
		p.signal(t, syscall.SIGTERM)
	}
	for _, p := range ps {
		if !p.wait(timeout - time.Since(start)) {
			t.Fatalf("%s did not stop within %s of SIGTERM", p.name, timeout)
		}
		if p.err != nil {
			t.Errorf("%s did not stop cleanly: %v\n%s", p.name, p.err, p.tail(10))
		}
		t.Logf("%s stopped after SIGTERM in %s", p.name, time.Since(start).Round(time.Millisecond))
	}
}

// alive fails t at once if one of ps has exited, with its last lines.
func alive(t *testing.T, ps ...*process) {
	t.Helper()
	for _, p := range ps {
		if p.exited() {
			t.Fatalf("%s (pid %d) exited: %v\n%s", p.name, p.pid(), p.err, p.tail(15))
		}
	}
}

// waitOwned waits for cond on the partitions workers own (see owned). It
// fails at once if one of them exits, and on a timeout it says what each
// owned last.
func waitOwned(t *testing.T, timeout time.Duration, what string, cond func() bool, workers ...*process) {
	t.Helper()
	defer func() {
		if t.Failed() {
			for _, w := range workers {
				t.Logf("%s owned %s at the end", w.name, partitionList(w.owned()))
			}
		}
	}()
	waitfor.Until(t, timeout, what, func() bool {
		alive(t, workers...)
		return cond()
	})
}

// workerArgs are the flags of one `worker run`.
type workerArgs struct {
	mailbox, journal string
	sink             string
	concurrency      int
	admin            string
	extra            []string
}

// kafkaSessionTimeout is the workers' Kafka group session: the broker's
// smallest allowed by default is 6s.
const kafkaSessionTimeout = 10 * time.Second

func startWorker(t *testing.T, dir, name string, w workerArgs) *process {
	t.Helper()
	args := []string{"run", "--mailbox", w.mailbox, "--journal", w.journal,
		"--concurrency", strconv.Itoa(max(w.concurrency, 1)), "--checkpoint-every", "25",
		"--backoff-initial", "5ms", "--backoff-max", "50ms", "--log-level", "info", "--shutdown-timeout", "30s"}
	if w.sink != "" {
		args = append(args, "--counter-sink", w.sink)
	}
	if w.admin == "" {
		w.admin = testenv.FreeAddr(t) // for GET /partitions
	}
	args = append(args, "--admin", w.admin)
	if strings.HasPrefix(w.mailbox, "kafka:") {
		// A killed or paused worker keeps its partitions this long.
		args = append(args, "--session-timeout", kafkaSessionTimeout.String())
	}
	p := startProcess(t, dir, name, workerBin, append(args, w.extra...)...)
	p.admin = w.admin
	return p
}

// metric scrapes one unlabelled counter or gauge from a worker's /metrics.
func metric(adminAddr, name string) (float64, bool) {
	code, body := testenv.Get("http://" + adminAddr + "/metrics")
	if code != 200 {
		return 0, false
	}
	return sample(body, name)
}

// sample finds one unlabelled sample in a Prometheus text page.
func sample(page, name string) (float64, bool) {
	for _, line := range strings.Split(page, "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			return f, err == nil
		}
	}
	return 0, false
}

// sqliteJournal returns a journal URL for a new SQLite file in dir.
func sqliteJournal(dir string) string { return "sqlite:" + filepath.Join(dir, "journal.db") }

// postgresJournal returns a journal URL for a new schema of POSTGRES_DSN,
// dropped when the test ends.
func postgresJournal(t *testing.T) string {
	t.Helper()
	dsn := testenv.Postgres(t)
	u, err := url.Parse(dsn)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		t.Fatalf("POSTGRES_DSN %q: want a postgres:// URL, as scripts/services.sh prints", dsn)
	}
	schema := fmt.Sprintf("pbit_%s", strconv.FormatInt(time.Now().UnixNano(), 36))
	runSQL := func(sql string) error {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, dsn)
		if err != nil {
			return err
		}
		defer conn.Close(ctx)
		_, err = conn.Exec(ctx, sql)
		return err
	}
	ident := pgx.Identifier{schema}.Sanitize()
	if err := runSQL("CREATE SCHEMA " + ident); err != nil {
		t.Fatalf("create schema for the journal: %v", err)
	}
	t.Cleanup(func() {
		if os.Getenv("POSTBOX_IT_KEEP") == "" {
			runSQL("DROP SCHEMA IF EXISTS " + ident + " CASCADE")
		}
	})
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return u.String()
}

// openMailbox opens a mailbox URL in-process, closed when the test ends.
func openMailbox(t *testing.T, url string, opts backend.MailboxOptions) *backend.Mailbox {
	t.Helper()
	mb, err := backend.OpenMailbox(context.Background(), url, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mb.Close() })
	return mb
}

// openJournal opens a journal URL in-process, closed when the test ends.
func openJournal(t *testing.T, url string) journal.Journal {
	t.Helper()
	j, err := backend.OpenJournal(context.Background(), url, backend.JournalOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { j.Close() })
	return j
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// dlqRow is one line of `worker dlq list`.
type dlqRow struct{ id, address, attempts, lastError string }

// dlqList runs `worker dlq list` on a mailbox.
func dlqList(t *testing.T, mailbox string) []dlqRow {
	t.Helper()
	r := run(t, "", workerBin, "dlq", "list", "--mailbox", mailbox)
	if r.code != 0 {
		t.Fatalf("worker dlq list: status %d: %s", r.code, r.stderr)
	}
	return parseDLQList(t, r.stdout)
}

// parseDLQList reads what `worker dlq list` prints.
func parseDLQList(t *testing.T, stdout string) []dlqRow {
	t.Helper()
	var rows []dlqRow
	for _, line := range strings.Split(strings.TrimSpace(stdout), "\n") {
		if line == "" {
			continue
		}
		f := strings.SplitN(line, "\t", 4)
		if len(f) != 4 {
			t.Fatalf("worker dlq list: unexpected line %q", line)
		}
		rows = append(rows, dlqRow{id: f[0], address: f[1], attempts: f[2], lastError: f[3]})
	}
	return rows
}

// dlqEnvelopes lists a mailbox's dead letters in-process: the CLI does not
// print message IDs.
func dlqEnvelopes(t *testing.T, mailbox string) []dlq.Envelope {
	t.Helper()
	mb := openMailbox(t, mailbox, backend.MailboxOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	envs, err := mb.DLQ.List(ctx)
	if err != nil {
		t.Fatalf("list dead letters: %v", err)
	}
	return envs
}

// sinkStats reads a counter sink: its lines and distinct idempotency keys.
func sinkStats(t *testing.T, path string) (lines, distinct int) {
	t.Helper()
	ls, err := counter.ReadSink(path)
	if err != nil {
		t.Fatal(err)
	}
	keys := map[string]bool{}
	for _, l := range ls {
		keys[l.Key] = true
	}
	return len(ls), len(keys)
}

// sinkLines counts a sink's lines cheaply, for progress.
func sinkLines(path string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	return strings.Count(string(b), "\n")
}

// outcome is an outcome entry of an actor's journal.
type outcome struct {
	kind, message string
	payload       json.RawMessage
	headers       map[string]string
}

// journalOutcomes runs `worker journal ADDR` and returns the outcome entries
// (completions and dead letters) in journal order.
func journalOutcomes(t *testing.T, journalURL, addr string) []outcome {
	t.Helper()
	r := run(t, "", workerBin, "journal", addr, "--journal", journalURL)
	if r.code != 0 {
		t.Fatalf("worker journal %s: status %d: %s", addr, r.code, r.stderr)
	}
	var out []outcome
	for _, line := range strings.Split(strings.TrimSpace(r.stdout), "\n") {
		var e struct {
			Kind    string `json:"kind"`
			Message string `json:"message"`
			Data    struct {
				Payload json.RawMessage   `json:"payload"`
				Headers map[string]string `json:"headers"`
			} `json:"data"`
		}
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("worker journal %s: line %q: %v", addr, line, err)
		}
		if e.Kind == "complete" || e.Kind == "dead-letter" {
			out = append(out, outcome{kind: e.Kind, message: e.Message, payload: e.Data.Payload, headers: e.Data.Headers})
		}
	}
	return out
}

// partitionList formats a set of partitions.
func partitionList(ps map[int32]bool) string {
	var s []int
	for p := range ps {
		s = append(s, int(p))
	}
	sort.Ints(s)
	return fmt.Sprint(s)
}

// testDir is t.TempDir, unless POSTBOX_IT_KEEP is set: then a directory
// that outlives the test (logs, journal, sink), named in the test's log.
func testDir(t *testing.T) string {
	t.Helper()
	if os.Getenv("POSTBOX_IT_KEEP") == "" {
		return t.TempDir()
	}
	dir, err := os.MkdirTemp("", "postbox-it-")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("POSTBOX_IT_KEEP: files kept in %s", dir)
	return dir
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

var nameChars = regexp.MustCompile(`[^a-z0-9]+`)

// uniqueName returns a name no other test and no earlier run uses, made of
// lower-case letters, digits and dashes: for mailboxes, namespaces, topics.
func uniqueName(t *testing.T) string {
	name := strings.Trim(nameChars.ReplaceAllString(strings.ToLower(t.Name()), "-"), "-")
	if len(name) > 40 {
		name = name[len(name)-40:]
	}
	return fmt.Sprintf("it-%s-%s", name, strconv.FormatInt(time.Now().UnixNano(), 36))
}

// serviceFlags are the worker flags the service tests share: a checkpoint
// every 10 messages, warnings only.
var serviceFlags = []string{"--checkpoint-every", "10", "--log-level", "warn"}

// loadRun is a counter (or tally) workload and the rate the producer
// publishes it at.
type loadRun struct {
	spec workload.Spec
	rate int // messages per second; 0: as fast as possible
}

// start runs `producer load` for the workload in the background, with
// flags added to loadArgs.
func (l loadRun) start(t *testing.T, dir, name, mailbox string, flags ...string) *process {
	t.Helper()
	args := slices.Concat([]string{"load", "--mailbox", mailbox}, flags, loadArgs(l.spec, l.rate))
	return startProcess(t, dir, name, producerBin, args...)
}

// expectation is what workloads must leave behind.
type expectation struct {
	states  map[string]counter.State
	valid   map[string]bool   // IDs of the messages that must be applied
	effects map[string]bool   // IDs of the valid messages that make a side effect: the counter's
	poison  map[string]string // ID → address of the messages that must be dead-lettered
	dups    int               // messages published twice
}

// expected adds up what specs, all published, must produce. A message
// is poison when the actor refuses its payload (no integer "add").
func expected(specs ...workload.Spec) expectation {
	e := expectation{states: map[string]counter.State{}, valid: map[string]bool{}, effects: map[string]bool{}, poison: map[string]string{}}
	for _, s := range specs {
		exp, _ := s.Generate(func(m channel.Message) error {
			var p counter.Payload
			switch {
			case json.Unmarshal(m.Payload, &p) != nil || p.Add == nil:
				e.poison[m.ID] = m.Address.String()
			case m.Address.Type == counter.Type:
				e.effects[m.ID] = true
				fallthrough
			default:
				e.valid[m.ID] = true
			}
			return nil
		})
		e.dups += exp.Duplicates
		for a, st := range exp.States {
			sum := e.states[a]
			sum.Value += st.Value
			sum.Applied += st.Applied
			e.states[a] = sum
		}
	}
	return e
}

// checkedLoad is a workload whose producer also writes what it expects
// (--expect), and what it must leave behind.
type checkedLoad struct {
	loadRun
	want expectation
}

func newCheckedLoad(spec workload.Spec, rate int) checkedLoad {
	return checkedLoad{loadRun: loadRun{spec: spec, rate: rate}, want: expected(spec)}
}

// start runs `producer load` against mailbox, writing its --expect file
// into dir.
func (l checkedLoad) start(t *testing.T, dir, mailbox string) *process {
	t.Helper()
	return l.loadRun.start(t, dir, "producer", mailbox, "--expect", filepath.Join(dir, "expect.json"))
}

// finish waits for the producer to publish everything, and checks that its
// --expect file says what the workload in-process says.
func (l checkedLoad) finish(t *testing.T, dir string, load *process, timeout time.Duration) {
	t.Helper()
	if !load.wait(timeout) {
		t.Fatalf("producer load did not finish within %s", timeout)
	}
	if load.err != nil {
		t.Fatalf("producer load failed: %v\n%s", load.err, load.tail(20))
	}
	var fromFile map[string]counter.State
	b, err := os.ReadFile(filepath.Join(dir, "expect.json"))
	if err == nil {
		err = json.Unmarshal(b, &fromFile)
	}
	if err != nil || len(fromFile) != len(l.want.states) {
		t.Fatalf("--expect file: %v (%d actors, want %d)", err, len(fromFile), len(l.want.states))
	}
	for addr, st := range l.want.states {
		if fromFile[addr] != st {
			t.Fatalf("--expect file says %s = %+v, the workload %+v", addr, fromFile[addr], st)
		}
	}
}

// waitSettled waits until every counter of the load is exact in j and
// every poison message is dead-lettered in mailbox, and returns the
// registry that replayed them.
func (l checkedLoad) waitSettled(t *testing.T, j journal.Journal, mailbox string) *actorhost.Registry {
	t.Helper()
	reg := actorRegistry(t)
	waitfor.Every(t, 3*time.Minute, time.Second, "every counter exact and every poison message dead-lettered", func() bool {
		return diffStates(context.Background(), reg, j, l.want.states).wrong == 0 && len(dlqList(t, mailbox)) >= len(l.want.poison)
	})
	return reg
}

// checkDeadLetters checks that the mailbox's DLQ holds exactly the poison
// messages of the load: through `worker dlq list` (one line each, the right
// addresses) and, for their message IDs, in-process. A poison message is
// dead-lettered on its first attempt, unless that attempt was cut short
// (its worker killed, its partition lost) before the dead letter was
// stored: then the redelivery counts a second attempt, which is logged.
func (e expectation) checkDeadLetters(t *testing.T, mailbox string) {
	t.Helper()
	e.checkDeadLetterRows(t, dlqList(t, mailbox))
	seen := map[string]bool{}
	for _, env := range dlqEnvelopes(t, mailbox) {
		switch {
		case e.poison[env.MessageID] == "":
			t.Errorf("dead letter %s of message %s (%s: %s) is not a poison message", env.ID, env.MessageID, env.Reason, env.LastError())
		case seen[env.MessageID]:
			t.Errorf("message %s is dead-lettered twice", env.MessageID)
		case env.Address != e.poison[env.MessageID]:
			t.Errorf("dead letter of %s has address %s, want %s", env.MessageID, env.Address, e.poison[env.MessageID])
		}
		seen[env.MessageID] = true
	}
	for id := range e.poison {
		if !seen[id] {
			t.Errorf("poison message %s is not in the DLQ", id)
		}
	}
}

// checkDeadLetterRows checks what `worker dlq list` printed: one dead letter
// per poison message, each at its address, after 1 to 5 attempts.
func (e expectation) checkDeadLetterRows(t *testing.T, rows []dlqRow) {
	t.Helper()
	if len(rows) != len(e.poison) {
		t.Errorf("worker dlq list: %d dead letters, want the %d poison messages", len(rows), len(e.poison))
	}
	wantAddrs := map[string]int{}
	for _, addr := range e.poison {
		wantAddrs[addr]++
	}
	retried := 0
	for _, r := range rows {
		wantAddrs[r.address]--
		n, err := strconv.Atoi(strings.TrimPrefix(r.attempts, "attempts="))
		switch {
		case err != nil || n < 1 || n > 5:
			t.Errorf("worker dlq list: %s (%s) has %s, want 1 to --max-attempts (5)", r.id, r.address, r.attempts)
		case n > 1:
			retried++
		}
	}
	if retried > 0 {
		t.Logf("%d poison messages were dead-lettered on a second or later attempt (the first one was cut short)", retried)
	}
	for addr, n := range wantAddrs {
		if n != 0 {
			t.Errorf("worker dlq list: %s has %d dead letters more than poison messages (negative: fewer)", addr, -n)
		}
	}
}

// checkSink checks the counter sink: one distinct idempotency key per valid
// counter message (none for a tally), and at most bound extra lines (side effects run again after a
// kill). It returns the number of extra lines.
func (e expectation) checkSink(t *testing.T, path string, bound int) int {
	t.Helper()
	lines, distinct := sinkStats(t, path)
	want := len(e.effects) // a tally makes none
	if distinct != want {
		t.Errorf("sink: %d distinct effect keys, want one per valid counter message: %d", distinct, want)
	}
	extra := lines - distinct
	if extra > bound {
		t.Errorf("sink: %d side effects ran twice; at most %d may", extra, bound)
	}
	return extra
}

// checker compares what the workers left in the journal, the dead-letter
// queue and the counter sink with what the workloads must produce.
type checker struct {
	reg  *actorhost.Registry
	j    journal.Journal
	mb   *backend.Mailbox
	want expectation
}

func newChecker(t *testing.T, journalURL string, mb *backend.Mailbox, want expectation) *checker {
	t.Helper()
	return &checker{reg: actorRegistry(t), j: openJournal(t, journalURL), mb: mb, want: want}
}

// waitExact waits until every actor is exact and the dead-letter queue
// holds as many letters as there are poison messages. The error says what
// was still wrong at the deadline, or at once that a message was applied
// twice: no waiting undoes that.
func (c *checker) waitExact(timeout time.Duration) error {
	ctx := context.Background()
	deadline := time.Now().Add(timeout)
	for {
		d := diffStates(ctx, c.reg, c.j, c.want.states)
		envs, err := c.mb.DLQ.List(ctx)
		if d.wrong == 0 && err == nil && len(envs) >= len(c.want.poison) {
			return nil
		}
		if d.over > 0 {
			return fmt.Errorf("of %d actors, %s\n%s", len(c.want.states), d, journalTail(ctx, c.j, d.addr, 12))
		}
		if time.Now().After(deadline) {
			msg := fmt.Sprintf("after %s: of %d actors, %d wrong; %d dead letters (err %v) of %d poison messages",
				timeout, len(c.want.states), d.wrong, len(envs), err, len(c.want.poison))
			if d.wrong > 0 {
				msg += fmt.Sprintf("\n%s\n%s", d, journalTail(ctx, c.j, d.addr, 12))
			}
			return errors.New(msg)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// final checks, once every worker has stopped: every actor exact; the
// dead-letter queue holds exactly the poison messages, from backend, each
// dead-lettered on a permanent error after 1 to maxAttempts counted
// attempts (an attempt counted durably before a crash or a fence counts
// too); every valid counter message made its side effect, under its own
// key, and no other key appears (a tally makes none); and effects ran twice
// at most bound times. It returns how many ran twice.
func (c *checker) final(t *testing.T, backend, sinkPath string, bound, maxAttempts int) int {
	t.Helper()
	ctx := context.Background()
	if d := diffStates(ctx, c.reg, c.j, c.want.states); d.wrong != 0 {
		t.Errorf("after the workers stopped, of %d actors, %s\n%s", len(c.want.states), d, journalTail(ctx, c.j, d.addr, 12))
	}
	envs, err := c.mb.DLQ.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, e := range envs {
		switch {
		case c.want.poison[e.MessageID] == "":
			t.Errorf("dead letter %s of message %s (%s: %s) is not a poison message", e.ID, e.MessageID, e.Reason, e.LastError())
		case seen[e.MessageID]:
			t.Errorf("message %s dead-lettered twice", e.MessageID)
		case e.Source.Backend != backend || e.Attempts < 1 || e.Attempts > maxAttempts || e.Reason != "permanent error":
			t.Errorf("dead letter of %s: backend %q, %d attempts, reason %q; want %s, 1 to %d, permanent error",
				e.MessageID, e.Source.Backend, e.Attempts, e.Reason, backend, maxAttempts)
		}
		seen[e.MessageID] = true
	}
	if len(seen) != len(c.want.poison) {
		t.Errorf("%d messages dead-lettered, want the %d poison ones", len(seen), len(c.want.poison))
	}

	lines, err := counter.ReadSink(sinkPath)
	if err != nil {
		t.Fatal(err)
	}
	keys := map[string]bool{}
	for _, l := range lines {
		if id, ok := strings.CutSuffix(l.Key, "#0"); !ok || !c.want.effects[id] {
			t.Errorf("side effect with key %q (%s) is not the effect of a valid counter message", l.Key, l.Actor)
		}
		keys[l.Key] = true
	}
	missing := 0
	for id := range c.want.effects {
		if !keys[actorhost.EffectKey(id, 0)] {
			missing++
		}
	}
	extra := len(lines) - len(keys)
	if missing > 0 || len(keys) != len(c.want.effects) {
		t.Errorf("%d distinct effect keys, want one per valid counter message: %d (%d missing)", len(keys), len(c.want.effects), missing)
	}
	if extra > bound {
		t.Errorf("%d side effects ran twice; at most %d may", extra, bound)
	}
	return extra
}

// processedOn sums postbox_messages_processed_total over workers' admin
// addresses (a worker that does not answer counts 0).
func processedOn(admins ...string) float64 {
	var sum float64
	for _, a := range admins {
		v, _ := metric(a, "postbox_messages_processed_total")
		sum += v
	}
	return sum
}

// services runs scripts/services.sh verb service for the server the
// tests use: the port comes from REDIS_ADDR or POSTGRES_DSN, the state
// directory from POSTBOX_SERVICES_DIR (the script's default when unset).
type services struct {
	service string // redis or postgres
	env     []string
}

// restartable returns a handle on the server of service, or skips the
// test (fails under CI) when scripts/services.sh does not manage it with
// this environment: the test must not restart a server it cannot start
// again.
func restartable(t *testing.T, service, hostPort string) services {
	t.Helper()
	_, port, err := net.SplitHostPort(hostPort)
	if err != nil {
		t.Fatalf("%s address %q: %v", service, hostPort, err)
	}
	s := services{service: service, env: os.Environ()}
	s.env = append(s.env, strings.ToUpper(service)+"_PORT="+port)
	if out, err := s.run("status"); err != nil {
		msg := fmt.Sprintf("this test restarts %s, and scripts/services.sh does not manage the server on port %s "+
			"(set POSTBOX_SERVICES_DIR to the directory it was started with): %v %s", service, port, err, out)
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return s
}

func (s services) run(verb string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "../scripts/services.sh", verb, s.service)
	cmd.Env = s.env
	out, err := cmd.CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

// restart stops the server, keeps it down for down, and starts it again
// (same data directory). It returns how long the server was unreachable.
func (s services) restart(t *testing.T, down time.Duration) time.Duration {
	t.Helper()
	begin := time.Now()
	if out, err := s.run("stop"); err != nil {
		t.Fatalf("services.sh stop %s: %v\n%s", s.service, err, out)
	}
	time.Sleep(down)
	if out, err := s.run("start"); err != nil {
		t.Fatalf("services.sh start %s: %v\n%s", s.service, err, out)
	}
	return time.Since(begin)
}

// stores are the mailbox and the journal that a scenario's workers share.
type stores struct {
	mailbox, journal string // URLs
	backend          string // the mailbox's backend, as dead letters name it
	partitions       int    // of the mailbox, created before anything runs (0: its default)
	// drained says whether every message was acked; nil if the backend
	// cannot tell.
	drained func(context.Context) error
}

// checkDrained checks, once the workers have stopped, that they acked
// every message.
func (s stores) checkDrained(t *testing.T) {
	t.Helper()
	if s.drained == nil {
		return
	}
	if err := s.drained(context.Background()); err != nil {
		t.Errorf("mailbox not drained after the workers stopped: %v", err)
	}
}

// restartScenario describes a run in which the server behind the mailbox or the
// journal is restarted while two workers are busy.
type restartScenario struct {
	stores
	server        services
	down          time.Duration // how long the server stays stopped
	before, after loadRun       // published before the workers start, and after the restart
	extra         []string      // worker flags
}

// restartUnderLoad runs r. The workers must ride the outage out on
// their own: every counter exact while they still run. Then, whatever
// happened, they are stopped and, if counters are still wrong, a fresh
// worker finishes: nothing acknowledged may have been lost, so the end
// state must be exact.
func restartUnderLoad(t *testing.T, r restartScenario) {
	dir := t.TempDir()
	sink := filepath.Join(dir, "sink.ndjson")
	mb := openMailbox(t, r.mailbox, backend.MailboxOptions{Partitions: r.partitions})
	check := newChecker(t, r.journal, mb, expected(r.before.spec, r.after.spec))

	// Both workers hold partitions before the load comes, so that both are
	// busy when the server restarts.
	admins := []string{testenv.FreeAddr(t), testenv.FreeAddr(t)}
	var workers []*process
	for i, admin := range admins {
		workers = append(workers, startWorker(t, dir, fmt.Sprintf("worker-%d", i+1), workerArgs{mailbox: r.mailbox, journal: r.journal,
			sink: sink, concurrency: 16, admin: admin, extra: slices.Concat(serviceFlags, r.extra)}))
	}
	waitfor.Until(t, time.Minute, "both workers to hold partitions, all of them between them", func() bool {
		alive(t, workers...)
		a, _ := metric(admins[0], "postbox_partitions_claimed")
		b, _ := metric(admins[1], "postbox_partitions_claimed")
		return a >= 1 && b >= 1 && int(a+b) == mb.Partitions
	})
	r.before.start(t, dir, "load-before", r.mailbox).exit(t, 2*time.Minute)
	waitfor.Until(t, time.Minute, "both workers busy and a fifth of the messages processed", func() bool {
		alive(t, workers...)
		return processedOn(admins[0]) >= 100 && processedOn(admins[1]) >= 100 &&
			processedOn(admins...) >= float64(r.before.spec.Count)/5
	})
	if done := processedOn(admins...); done > float64(r.before.spec.Count)*0.8 {
		t.Fatalf("%v of %d messages processed before both workers were busy: publish more before the restart", done, r.before.spec.Count)
	}
	atStop := []float64{processedOn(admins[0]), processedOn(admins[1])}
	outage := r.server.restart(t, r.down)
	t.Logf("%s restarted after the workers processed %v messages; unreachable for %s", r.server.service, atStop, outage.Round(time.Millisecond))
	alive(t, workers...)
	r.after.start(t, dir, "load-after", r.mailbox).exit(t, 2*time.Minute)

	exactLive := check.waitExact(90 * time.Second)
	if exactLive != nil {
		t.Errorf("the workers that lived through the restart did not finish the work: %v", exactLive)
	}
	for _, w := range workers {
		t.Logf("%s: %d \"outcome lookup failed; retrying\", %d \"journal append failed; retrying\", %d \"activating actor failed\" log lines",
			w.name, w.count("outcome lookup failed"), w.count("journal append failed"), w.count("activating actor failed"))
	}
	alive(t, workers...)
	for _, w := range workers {
		w.stop(t, time.Minute)
	}
	if exactLive != nil {
		// Durability apart from liveness: what was acknowledged is in the
		// journal, and what was not comes again.
		w := startWorker(t, dir, "worker-fresh", workerArgs{mailbox: r.mailbox, journal: r.journal, sink: sink,
			concurrency: 16, extra: slices.Concat(serviceFlags, r.extra)})
		if err := check.waitExact(2 * time.Minute); err != nil {
			t.Fatalf("a fresh worker could not finish either: %v", err)
		}
		t.Logf("a fresh worker started after the others stopped made every counter exact")
		w.stop(t, time.Minute)
	}
	// Messages in flight at the outage may make their effect again when
	// they are redelivered: at most one per handler running at once.
	extra := check.final(t, r.backend, sink, 2*16, 2)
	r.checkDrained(t)
	t.Logf("%d side effects ran twice", extra)
}
