package integration

// The one harness for the programs the tests start: workers, producers.

import (
	"bufio"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/postbox-dev/postbox/actorhost"
	"github.com/postbox-dev/postbox/internal/waitfor"
)

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
